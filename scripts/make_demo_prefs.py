"""Generate the bundled JSON-extraction preference set (deterministic, written for this project).

Writes backend/app/demo/json_extract_prefs/{train,eval}.jsonl from the json-extract demo rows: the
first 100 training rows become training pairs and the 50 held-out rows become held-out pairs, so a
held-out pair never shares a name, city or (for half of them) a sentence template with training.
Each pair is OpenAI's preference row: the user's request, the exact JSON as the preferred answer, and
a plausible wrong answer as the non-preferred one: a wrong value (age, city, first name only) or one of
the shapes the untuned model writes (several lines, a code fence, nested, a made-up key, a sentence first).
"""

import argparse
import json
from pathlib import Path

DEMO = Path(__file__).resolve().parent.parent / "backend" / "app" / "demo"
N_TRAIN = 100


def wrong_answer(contact: dict, i: int, cities: list[str]) -> str:
    """A plausible wrong answer to ``contact``'s request. Every fourth row gets a wrong value (age, city,
    name); the others the shapes the untuned model writes itself (JSON over several lines, in a code fence,
    nested, with a made-up key, after a sentence), which it often finds likelier than the exact line."""
    name, age, city = contact["name"], contact["age"], contact["city"]
    other_city = next(c for c in cities[i % len(cities):] + cities if c != city)
    fenced = "```json\n" + json.dumps(contact, indent=2) + "\n```"
    content = [
        {"name": name, "age": age + 1 + i % 9, "city": city},
        {"name": name, "age": age, "city": other_city},
        {"name": name.split()[0], "age": age, "city": city},
    ]
    shape = [
        json.dumps(contact, indent=2),
        fenced,
        json.dumps({"contact": contact}, indent=2),
        "Here is the contact information in JSON format:\n\n" + fenced,
        json.dumps({"name": name, "age": age, "location": city}, indent=4),
    ]
    if i % 4 == 0:
        return json.dumps(content[(i // 4) % len(content)])
    return shape[(i - i // 4 - 1) % len(shape)]


def pairs(rows: list[dict]) -> list[dict]:
    answers = [json.loads(row["messages"][-1]["content"]) for row in rows]
    cities = sorted({a["city"] for a in answers})
    return [{"input": {"messages": row["messages"][:-1]},
             "preferred_output": [row["messages"][-1]],
             "non_preferred_output": [{"role": "assistant", "content": wrong_answer(answer, i, cities)}]}
            for i, (row, answer) in enumerate(zip(rows, answers))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEMO / "json_extract_prefs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for split, limit in (("train", N_TRAIN), ("eval", None)):
        lines = (DEMO / "json_extract" / f"{split}.jsonl").read_text().splitlines()[:limit]
        rows = pairs([json.loads(line) for line in lines if line.strip()])
        (args.out / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        print(f"{split}: {len(rows)} pairs")


if __name__ == "__main__":
    main()
