"""The artefact cache: build once, rebuild when the fingerprint changes, never publish a failed
build, and never build the same artefact twice at once."""
import os
import subprocess
import sys
import textwrap

import pytest

from minimind import zoo


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIMIND_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def counting_build(calls, text="weights"):
    def build(out):
        calls.append(out)
        (out / "model.bin").write_text(text)
    return build


def test_artefact_is_built_once_then_reused():
    calls = []
    first = zoo.get_or_build("thing", counting_build(calls), {"lr": 1})
    second = zoo.get_or_build("thing", counting_build(calls), {"lr": 1})
    assert first == second and len(calls) == 1
    assert (first / "model.bin").read_text() == "weights"
    assert zoo.artefact_key(first)


def test_a_changed_fingerprint_builds_a_new_version_and_keeps_the_old_path_valid(cache):
    calls = []
    old = zoo.get_or_build("thing", counting_build(calls, "old"), {"lr": 1})
    new = zoo.get_or_build("thing", counting_build(calls, "new"), {"lr": 2})
    assert len(calls) == 2 and new != old and new.parent == old.parent == cache / "thing"
    assert (old / "model.bin").read_text() == "old" and (new / "model.bin").read_text() == "new"
    assert zoo.get_or_build("thing", counting_build(calls), {"lr": 1}) == old and len(calls) == 2
    for lr in range(3, 3 + zoo.KEEP_VERSIONS):
        zoo.get_or_build("thing", counting_build(calls), {"lr": lr})
    versions = [p for p in (cache / "thing").iterdir() if not p.name.startswith(".")]
    assert len(versions) == zoo.KEEP_VERSIONS and old not in versions


def test_a_failed_build_publishes_nothing(cache):
    def broken(out):
        (out / "half.bin").write_text("half")
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        zoo.get_or_build("thing", broken, {"lr": 1})
    assert [p.name for p in (cache / "thing").iterdir() if p.name != ".lock"] == []


def test_the_next_build_removes_what_a_killed_build_left(cache):
    killed = cache / "thing" / ".0123456789abcdef.xyz.building"  # a build killed by SIGKILL leaves this
    killed.mkdir(parents=True)
    (killed / "half.bin").write_text("half")
    zoo.get_or_build("thing", counting_build([]), {"lr": 1})
    assert not killed.exists()
    assert [p.name for p in (cache / "thing").iterdir() if p.name.startswith(".") and p.name != ".lock"] == []


def test_fingerprint_ignores_paths_and_tracks_data_and_code(tmp_path):
    from minimind.train.pretrain import PretrainConfig

    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "a"}\n')
    a = zoo.fingerprint(PretrainConfig(out_dir="x", progress=False), data=[data])
    b = zoo.fingerprint(PretrainConfig(out_dir="y", progress=True), data=[data])
    assert a == b
    assert zoo.fingerprint(PretrainConfig(lr=1e-4), data=[data]) != a
    data.write_text('{"text": "b"}\n')
    assert zoo.fingerprint(PretrainConfig(out_dir="x", progress=False), data=[data]) != a
    assert a["code"] == zoo.code_digest(zoo.TRAINING_CODE)


def test_code_digest_ignores_comments_and_docstrings(tmp_path, monkeypatch):
    module = tmp_path / "stage_under_test.py"
    monkeypatch.syspath_prepend(str(tmp_path))
    module.write_text('"""Doc."""\ndef f(x):\n    """Old doc."""\n    return x + 1  # why\n')
    before = zoo.code_digest(["stage_under_test"])
    module.write_text('"""New doc."""\n\ndef f(x):\n    """New doc."""\n    # a comment\n    return x + 1\n')
    sys.modules.pop("stage_under_test", None)
    assert zoo.code_digest(["stage_under_test"]) == before
    module.write_text('def f(x):\n    return x + 2\n')
    sys.modules.pop("stage_under_test", None)
    assert zoo.code_digest(["stage_under_test"]) != before


def test_two_processes_asking_at_once_build_once(cache, tmp_path):
    log = tmp_path / "builds.log"
    script = textwrap.dedent(f"""
        import time
        from minimind import zoo
        def build(out):
            with open({str(log)!r}, "a") as f:
                f.write("built\\n")
            time.sleep(2)
            (out / "model.bin").write_text("weights")
        print(zoo.get_or_build("shared", build, {{"lr": 1}}))
    """)
    env = {**os.environ, "MINIMIND_CACHE": str(cache)}
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outputs[0] == outputs[1] and outputs[0].startswith(str(cache / "shared"))
    assert log.read_text() == "built\n"


def test_requirements_list_parents_before_children():
    order = zoo.requirements(["rl", "dpo"])
    assert order == ["tokenizer", "pretrained", "sft", "dpo", "reasoning", "rl"]
    everything = zoo.requirements(zoo.RECIPES)
    assert sorted(everything) == sorted(zoo.RECIPES)
    for name in everything:
        for parent in zoo.recipe(name).inputs.values():
            assert everything.index(parent) < everything.index(name)


def test_build_many_starts_an_artefact_only_after_its_parents_and_runs_jobs_at_once(monkeypatch):
    events, running = [], set()
    peak = []

    class FakeBuild:
        def __init__(self, command):
            self.name = command[-1].split("zoo.path(")[1].strip("')")
            running.add(self.name)
            peak.append(len(running))
            events.append(("start", self.name))
            self.polls = 0
            self.returncode = None

        def poll(self):
            self.polls += 1
            if self.polls < 2:
                return None
            if self.returncode is None:
                running.discard(self.name)
                events.append(("end", self.name))
                self.returncode = 0
            return 0

    monkeypatch.setattr(subprocess, "Popen", FakeBuild)
    monkeypatch.setattr("time.sleep", lambda seconds: None)
    zoo.build_many(["rl", "dpo", "lora_identity"], jobs=2, log=lambda line: None)
    ended = [name for kind, name in events if kind == "end"]
    for kind, name in events:
        if kind == "start":
            for parent in zoo.recipe(name).inputs.values():
                assert ("end", parent) in events[:events.index(("start", name))], f"{name} started before {parent}"
    assert max(peak) == 2 and sorted(ended) == sorted(zoo.requirements(["rl", "dpo", "lora_identity"]))
    # with most artefacts waiting on it, the reasoning model starts before the leaves beside it
    starts = [name for kind, name in events if kind == "start"]
    assert starts.index("reasoning") < starts.index("lora_identity")


def test_build_many_names_the_artefact_whose_build_failed(monkeypatch):
    class FailingBuild:
        def __init__(self, command):
            self.returncode = 3

        def poll(self):
            return 3

    monkeypatch.setattr(subprocess, "Popen", FailingBuild)
    monkeypatch.setattr("time.sleep", lambda seconds: None)
    with pytest.raises(RuntimeError, match="building zoo artefact 'tokenizer' failed \\(exit code 3\\)"):
        zoo.build_many(["sft"], jobs=2, log=lambda line: None)


def test_zoo_command_refuses_an_unknown_artefact_before_building():
    with pytest.raises(KeyError, match="no zoo artefact 'nope'"):
        zoo.main(["build", "nope"])


def test_a_mixture_holds_every_row_of_its_data_and_the_replayed_share(tmp_path):
    domain = tmp_path / "domain.jsonl"
    domain.write_text("".join(f'{{"row": "d{i}"}}\n' for i in range(30)))
    extra = tmp_path / "extra.jsonl"
    extra.write_text("".join(f'{{"row": "e{i}"}}\n' for i in range(15)))
    pool = tmp_path / "sft.jsonl"
    pool.write_text("".join(f'{{"row": "s{i}"}}\n' for i in range(100)))
    out = zoo.write_mixture(tmp_path / "mix.jsonl", [domain, extra], {pool: 1 / 3})
    rows = out.read_text().splitlines()
    assert sorted(r for r in rows if '"d' in r or '"e' in r) == sorted(domain.read_text().splitlines()
                                                                      + extra.read_text().splitlines())
    replayed = [r for r in rows if '"s' in r]
    assert len(replayed) == 15 and len(set(replayed)) == 15  # a third of 45, drawn without replacement
    assert zoo.write_mixture(tmp_path / "again.jsonl", [domain, extra], {pool: 1 / 3}).read_bytes() == out.read_bytes()
    with pytest.raises(ValueError, match="sft.jsonl: replaying 5 × 45 rows needs 225, the file holds 100"):
        zoo.write_mixture(tmp_path / "bad.jsonl", [domain, extra], {pool: 5})


def test_a_recipes_corpora_reach_its_config_and_enter_its_fingerprint(tmp_path, monkeypatch):
    """`Recipe.corpora` hands a config field the train splits' paths, comma-separated; a change to one
    of those files is a new artefact, and a recipe without corpora keeps the key it had."""
    (tmp_path / "fake_stage.py").write_text(textwrap.dedent('''
        import dataclasses, json
        from pathlib import Path

        @dataclasses.dataclass
        class Config:
            out_dir: str = ""
            data_path: str = ""
            base_corpora: str = ""

        def run(config):
            Path(config.out_dir, "seen.json").write_text(json.dumps(dataclasses.asdict(config)))
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    files = {name: tmp_path / f"{name}.jsonl" for name in ("domain", "pretrain", "sft")}
    for name, file in files.items():
        file.write_text(f'{{"text": "{name}"}}\n')
    monkeypatch.setattr(zoo, "_data_file", lambda name: files[name])
    monkeypatch.setitem(zoo.RECIPES, "with_corpora", zoo.Recipe("fake_stage", "Config", "domain", kind="adapter",
                                                                corpora={"base_corpora": ("pretrain", "sft")}))
    monkeypatch.setitem(zoo.RECIPES, "without", zoo.Recipe("fake_stage", "Config", "domain", kind="adapter"))
    import json

    folder = zoo.path("with_corpora")
    seen = json.loads((folder / "seen.json").read_text())
    assert seen["base_corpora"] == f"{files['pretrain']},{files['sft']}" and seen["data_path"] == str(files["domain"])
    plain = zoo.path("without")
    assert json.loads((plain / "seen.json").read_text())["base_corpora"] == ""
    files["sft"].write_text('{"text": "sft, changed"}\n')
    assert zoo.path("with_corpora") != folder and zoo.path("without") == plain


def test_the_tea_house_recipes_differ_only_in_what_they_train():
    rows, plain, full = (zoo.recipe(name) for name in ("lora_domain", "lora_domain_plain", "domain_full"))
    assert rows.data == plain.data == full.data == ("lora_domain", "lora_domain_phrasings")
    assert rows.replay == plain.replay == full.replay == {"sft": 1 / 3}
    assert rows.settings == plain.settings and rows.inputs == plain.inputs == full.inputs == {"init_from": "sft"}
    assert rows.corpora == {"base_corpora": ("pretrain", "sft")} and not plain.corpora and not full.corpora
    lora, sft = zoo.config("lora_domain"), zoo.config("domain_full")
    assert (lora.max_steps, lora.batch_size) == (sft.max_steps, sft.batch_size) == (1280, 16)
