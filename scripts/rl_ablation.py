"""Chapter 12's ablation: GRPO with and without its KL term, CISPO and PPO, each over three seeds.

    python scripts/rl_ablation.py            # ~55 min on one core; writes minimind/checks/rl_ablation.json
    python scripts/rl_ablation.py --variants "GRPO on sub3 only, 200 steps"   # measure one again
    make rl-ablation

Every variant starts from the zoo's reasoning model and runs the zoo's `rl` recipe (100 steps of
8 prompts × 8 replies, lr 2e-4, the world's `rl` split) with one thing changed. The GRPO + KL
variant *is* the recipe, so its three seeds are the zoo's artefacts `rl`, `rl_seed43` and
`rl_seed44` (loaded, not retrained). The last variant spends twice the steps on the weakest kind
alone: the `rl` split's three-digit differences. Each model answers chapter 12's three groups of held-out
problems greedily; the right/wrong outcome of every problem is kept, so the chapter can pair each
problem's answer before and after RL. The chapter reads and prints this file: twelve RL runs do
not fit in its four minutes.
"""
import argparse
import datetime
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import torch  # noqa: E402

from measure_bands import _cpu_model  # noqa: E402  (the machine's description the bands use)
from minimind import zoo  # noqa: E402
from minimind.data.synthetic import RL_PROBLEM_TEMPLATES, build_world  # noqa: E402
from minimind.eval import generate_replies, score_answers  # noqa: E402
from minimind.runtime import replica_seed  # noqa: E402
from minimind.train import rl  # noqa: E402

RESULTS = REPO / "minimind" / "checks" / "rl_ablation.json"  # package data: the chapter reads it in Colab too
KINDS = ("add2", "add3", "sub3")
SEEDS = (42, 43, 44)
ZOO_RUNS = {42: "rl", 43: "rl_seed43", 44: "rl_seed44"}  # the recipe's three seeds, as the zoo names them
VARIANTS = {
    "GRPO + KL 0.05 (the recipe)": None,
    "GRPO, no KL": {"kl_coef": 0.0},
    # with one update per rollout every ratio is 1 and CISPO's gradient is GRPO's: the rows agree
    "CISPO + KL 0.05": {"algorithm": "cispo", "clip_low": 1.0, "clip_high": 4.0},
    "PPO + KL 0.05": {"algorithm": "ppo"},
    # from the second update on the ratios move: GRPO clips tokens away, CISPO only bounds their weight
    "GRPO, 2 updates per rollout": {"ppo_epochs": 2},
    "CISPO, 2 updates per rollout": {"algorithm": "cispo", "clip_low": 1.0, "clip_high": 4.0, "ppo_epochs": 2},
    "GRPO on sub3 only, 200 steps": {"max_steps": 200, "kinds": ["sub3"]},
}


def held_out_groups(world) -> dict:
    """Chapter 12's held-out problems: original phrasings (val), RL phrasings, unseen phrasings."""
    templates = [t for by_lang in RL_PROBLEM_TEMPLATES.values() for ts in by_lang.values() for t in ts]
    in_rl = lambda p: any(p.prompt == t.format(a=p.a, b=p.b) for t in templates)  # noqa: E731
    reworded = world.problems("reworded")
    return {"original phrasings": world.problems("val"),
            "RL phrasings": [p for p in reworded if in_rl(p)],
            "unseen phrasings": [p for p in reworded if not in_rl(p)]}


def outcomes(model, tokenizer, groups) -> dict:
    """{group: {kind: "0110…"}}: greedy reply right (1) or not, problem by problem, as chapter 12 scores."""
    result = {}
    for name, problems in groups.items():
        result[name] = {}
        for kind in KINDS:
            chosen = [p for p in problems if p.kind == kind]
            replies = generate_replies(model, tokenizer, [p.prompt for p in chosen], max_new_tokens=80)
            result[name][kind] = "".join(
                str(score_answers([r], [p.answer], require_think=True).correct) for r, p in zip(replies, chosen))
    return result


def code_sha256() -> str:
    """Hash of the RL stage's source: the chapter marks the table stale when the stage changes."""
    return hashlib.sha256((REPO / "minimind" / "train" / "rl.py").read_bytes()).hexdigest()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS),
                        help="measure only these (the others' results are kept)")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("MINIMIND_THREADS", "1")))
    tokenizer, world = zoo.tokenizer(), build_world(seed=0)
    groups = held_out_groups(world)
    reasoning_path = str(zoo.path("reasoning"))
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if results.get("rl_code_sha256") != code_sha256():
        results = {}  # measured with another RL stage: nothing of it is kept
    results["reasoning"] = outcomes(zoo.load("reasoning"), tokenizer, groups)
    measured = results.setdefault("variants", {})
    for variant in args.variants:
        changes = dict(VARIANTS[variant] or {})
        kinds = changes.pop("kinds", None)
        problems = [p for p in rl.default_problems(zoo.config("rl")) if kinds is None or p.kind in kinds]
        runs = {}
        for seed in SEEDS:
            began = time.time()
            if VARIANTS[variant] is None:
                model = zoo.load(ZOO_RUNS[seed])
            else:
                config = zoo.config("rl", init_from=reasoning_path, out_dir="", seed=replica_seed(seed), **changes)
                model = rl.run(config, problems=problems).model
            runs[str(seed)] = outcomes(model, tokenizer, groups)
            print(f"{variant}, seed {seed}: {time.time() - began:.0f} s", flush=True)
        measured[variant] = {"changes": VARIANTS[variant] or {}, "runs": runs}
    results["variants"] = {name: measured[name] for name in VARIANTS if name in measured}  # the table's order
    results.update(measured_on=datetime.date.today().isoformat(), rl_code_sha256=code_sha256(),
                   machine=f"{platform.machine()} {_cpu_model()}, torch {torch.__version__}, "
                           f"{torch.get_num_threads()} thread(s)")
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
