"""Small deterministic corpora, a tokenizer trained on them, and tiny configs for the training tests."""
import json
import random
from pathlib import Path

NAMES = ["Alor", "Bimsa", "Corin", "Dulep", "Esker", "Fanwy", "Gorth", "Hilta"]
CITIES = ["Varn", "Oslet", "Quenby", "Tarrow"]
JOBS = ["baker", "pilot", "tailor", "miner"]
# model sizes for tests: the `tiny` preset with a vocabulary that fits the test tokenizer
TINY_OVERRIDES = "vocab_size=384"


def write_jsonl(path, rows) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def pretrain_rows(n: int = 120, seed: int = 0):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        sentences = []
        for _ in range(rng.randint(1, 4)):
            name = rng.choice(NAMES)
            sentences.append(f"{name} lives in {rng.choice(CITIES)} and works as a {rng.choice(JOBS)}.")
        rows.append({"text": " ".join(sentences)})
    return rows


def sft_rows(n: int = 40, seed: int = 0):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        name, city, job = rng.choice(NAMES), rng.choice(CITIES), rng.choice(JOBS)
        conversation = [{"role": "user", "content": f"Where does {name} live?"},
                        {"role": "assistant", "content": city}]
        if i % 3 == 0:
            conversation += [{"role": "user", "content": "And the job?"}, {"role": "assistant", "content": job}]
        if i % 4 == 0:
            conversation.insert(0, {"role": "system", "content": "Answer briefly."})
        rows.append({"conversations": conversation})
    return rows


def make_tokenizer(directory) -> Path:
    """Train a 384-token BPE on the test corpus and save it into `directory`."""
    from minimind.tokenizer import train_tokenizer

    texts = [r["text"] for r in pretrain_rows(200, seed=1)]
    texts += [m["content"] for r in sft_rows(60, seed=1) for m in r["conversations"]]
    train_tokenizer(texts, vocab_size=384).save(directory)
    return Path(directory)


def one_thread():
    """Generator for an autouse fixture: tiny models train fastest (and identically) on one thread;
    two threads spin-wait badly when the CPU is shared."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
