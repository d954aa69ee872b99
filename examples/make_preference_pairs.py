"""Generate examples/data/gsm8k_preference_pairs.json: preference pairs for DPO and ORPO made from GSM8K.

LLaMA-Factory's layout (one JSON array; each item a ShareGPT ``conversations`` list holding the prompt turns, a
``chosen`` and a ``rejected`` message) from the first 60 questions of examples/data/gsm8k_train.jsonl after the
first: chosen = the real worked answer, rejected = the answer with a wrong final number or with its reasoning cut
short. Every other prompt has both pairs (the same prompt twice); every fourth prompt starts with a system turn,
every fifth has an earlier exchange before the question (the previous item, answered). Seeded and standard library
only: rerunning rewrites the file byte for byte.

    python examples/make_preference_pairs.py
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
OUT = DATA / "gsm8k_preference_pairs.json"
PROMPTS = 60
SYSTEM = "You are a careful math tutor. Show each step of your reasoning."


def wrong_final_answer(answer: str, rng: random.Random) -> str:
    """The worked answer with its final number changed wherever the last two lines state it."""
    *steps, final = answer.split("\n")
    number = final.removeprefix("#### ").strip()
    try:
        wrong = str(int(number.replace(",", "")) + rng.choice([-3, -2, -1, 1, 2, 5, 10]))
    except ValueError:
        wrong = number + "0"
    last = re.sub(rf"(?<![\d.]){re.escape(number)}(?!\d|\.\d)", wrong, steps[-1]) if steps else ""
    return "\n".join([*steps[:-1], last, f"#### {wrong}"] if steps else [f"#### {wrong}"])


def truncated_reasoning(answer: str) -> str:
    """The first half of the worked answer's steps, with no final answer."""
    steps = answer.split("\n")[:-1]
    return "\n".join(steps[: max(1, len(steps) // 2)])


def preference_pairs(gsm8k: list[dict]) -> list[dict]:
    """The pairs of ``gsm8k[1:]`` (``{"question", "answer"}`` items; ``gsm8k[0]`` is only an earlier exchange)."""
    rng = random.Random(5)
    previous, records = gsm8k[0], []
    for i, item in enumerate(gsm8k[1:]):
        turns = [{"from": "human", "value": item["question"]}]
        if i % 5 == 2:
            turns = [
                {"from": "human", "value": previous["question"]},
                {"from": "gpt", "value": previous["answer"]},
                *turns,
            ]
        if i % 4 == 0:
            turns = [{"from": "system", "value": SYSTEM}, *turns]
        wrong, cut = wrong_final_answer(item["answer"], rng), truncated_reasoning(item["answer"])
        for bad in [wrong, cut] if i % 2 == 0 else [cut] if i % 4 == 1 else [wrong]:
            records.append(
                {
                    "conversations": turns,
                    "chosen": {"from": "gpt", "value": item["answer"]},
                    "rejected": {"from": "gpt", "value": bad},
                }
            )
        previous = item
    return records


def main() -> None:
    lines = (DATA / "gsm8k_train.jsonl").read_text(encoding="utf-8").splitlines()[: PROMPTS + 1]
    pairs = preference_pairs([json.loads(line) for line in lines])
    OUT.write_text(json.dumps(pairs, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{OUT}: {len(pairs)} pairs of {PROMPTS} prompts")


if __name__ == "__main__":
    main()
