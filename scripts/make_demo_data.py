"""Generate the bundled JSON-extraction demo dataset (deterministic, written for this project).

Writes backend/app/demo/json_extract/{train,eval}.jsonl. Every eval row uses a first name, a
surname and a city that never occur in the training rows; half of the eval rows also use a
sentence template that never occurs in training.
"""

import argparse
import json
import random
from pathlib import Path

SEED = 1234
N_TRAIN = 400
N_EVAL = 50
INSTRUCTION = "Extract the contact as JSON: "
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "backend" / "app" / "demo" / "json_extract"

TRAIN_FIRST = [
    "Anna", "Ben", "Carlos", "Dana", "Emil", "Fatima", "George", "Hana", "Ivan", "Julia",
    "Kenji", "Laura", "Mateo", "Nina", "Oscar", "Priya", "Quinn", "Rosa", "Samuel", "Tara",
    "Umar", "Vera", "Walter", "Ximena", "Yusuf", "Zoe", "Aiko", "Bruno", "Chloe", "Diego",
    "Elena", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kira", "Leo", "Mira", "Noah",
    "Olga", "Pablo", "Rania", "Stefan", "Talia", "Uma", "Viktor", "Wen", "Yara", "Zane", "Abel", "Bianca",
    "Cyrus", "Delia", "Enzo", "Freya", "Gustavo", "Helga", "Idris", "Jana", "Kofi", "Lena", "Milan", "Nadia",
    "Omar", "Paula", "Rafael", "Sofia", "Theo", "Ulla", "Valentin", "Wanda", "Yosef", "Zara", "Arjun",
    "Beatriz", "Colin", "Dalia", "Elif", "Frank",
]
TRAIN_LAST = [
    "Smith", "Garcia", "Novak", "Kim", "Okafor", "Rossi", "Schmidt", "Tanaka", "Haddad", "Jensen",
    "Costa", "Ivanova", "Nguyen", "Patel", "Moreau", "Kowalski", "Silva", "Berg", "Murphy", "Sato",
    "Fischer", "Lopez", "Adeyemi", "Horvat", "Lindqvist", "Duarte", "Brennan", "Yilmaz", "Weber", "Castillo",
    "Olsen", "Petrov", "Quintero", "Romano", "Svensson", "Takahashi", "Ueda", "Varga", "Walsh", "Xu", "Young",
    "Zapata", "Abbasi", "Becker", "Cohen", "Dubois", "Eze", "Fontaine", "Grant", "Hakimi",
]
TRAIN_CITIES = [
    "Berlin", "Madrid", "Toronto", "Osaka", "Lagos", "Lima", "Oslo", "Denver", "Porto", "Nairobi",
    "Krakow", "Dublin", "Seoul", "Austin", "Lyon", "Cape Town", "Hamburg", "Melbourne", "Bogota", "Helsinki",
    "San Diego", "Munich", "Vancouver", "Accra", "Quito", "Tallinn", "New Orleans", "Glasgow", "Perth", "Valencia",
    "Athens", "Bangkok", "Cairo", "Dallas", "Florence", "Geneva", "Hanoi", "Istanbul", "Jakarta", "Kyiv",
    "Lisbon", "Marseille", "Naples", "Ottawa", "Prague", "Riga", "Seville", "Tokyo", "Utrecht", "Warsaw",
    "Bilbao", "Calgary", "Durban", "Gdansk", "Havana", "Leeds", "Montreal", "Nantes", "Phoenix", "Sydney",
    "Turin", "Vilnius", "Auckland", "Boston", "Cologne", "Bristol", "Mumbai", "Oaxaca", "Pune", "Reykjavik",
    "Buenos Aires", "Las Vegas", "Hong Kong", "Tel Aviv", "Kuala Lumpur",
]
EVAL_FIRST = [
    "Amara", "Boris", "Celine", "Dmitri", "Esther", "Felix", "Gloria", "Hiroshi", "Isla", "Joaquin",
    "Keira", "Lucas", "Marta", "Nikhil",
]
EVAL_LAST = [
    "Andersen", "Baptiste", "Chowdhury", "Dimitrov", "Eriksen", "Ferreira", "Gallagher", "Hoffmann", "Ito", "Jovanovic",
]
EVAL_CITIES = [
    "Vienna", "Santiago", "Chicago", "Kyoto", "Dakar", "Edinburgh", "Rio de Janeiro", "Zurich", "Manila", "Cork",
    "Salt Lake City", "Bergen",
]

TRAIN_TEMPLATES = [
    "{name} is {age} years old and lives in {city}.",
    "Meet {name} from {city}, {age} years old.",
    "{name}, aged {age}, recently moved to {city}.",
    "Our newest member is {name} ({age}), based in {city}.",
    "Born and raised in {city}, {name} just turned {age}.",
    "At {age}, {name} runs a small bakery in {city}.",
    "The form says: name {name}, age {age}, city {city}.",
    "{name} ({age}) wrote to us from {city} last week.",
    "I ran into {name} in {city}; they turned {age} this spring.",
    "Contact: {name}, {age}, {city}.",
    "Please add {name} from {city} to the list, {age} years old.",
    "{city} resident {name} celebrated turning {age} on Sunday.",
    "Speaker: {name}. Age: {age}. Hometown: {city}.",
    "{name} has lived in {city} for years and is now {age}.",
    "Applicant {name}, {age}, currently living in {city}, applied for the job.",
    "Say hello to {name}! {age} years young and living in {city}.",
]
EVAL_TEMPLATES = [
    "We are shipping the package to {name} in {city}, who is {age}.",
    "{age}-year-old {name} commutes to work every day in {city}.",
    "Registration received: {name} ({city}), age {age}.",
    "According to the survey, {name} lives in {city} and is {age}.",
]


def make_row(rng: random.Random, firsts: list[str], lasts: list[str], cities: list[str], templates: list[str]) -> dict:
    """Build one chat row from the given name, city and template pools."""
    name = f"{rng.choice(firsts)} {rng.choice(lasts)}"
    age = rng.randint(18, 89)
    city = rng.choice(cities)
    sentence = rng.choice(templates).format(name=name, age=age, city=city)
    answer = json.dumps({"name": name, "age": age, "city": city}, ensure_ascii=False)
    return {
        "messages": [
            {"role": "user", "content": INSTRUCTION + sentence},
            {"role": "assistant", "content": answer},
        ]
    }


def make_split(rng: random.Random, n: int, pools: list[tuple[list[str], list[str], list[str], list[str]]]) -> list[dict]:
    """Draw n rows with unique prompts, cycling through the pool tuples row by row."""
    rows: list[dict] = []
    seen: set[str] = set()
    while len(rows) < n:
        row = make_row(rng, *pools[len(rows) % len(pools)])
        prompt = row["messages"][0]["content"]
        if prompt not in seen:
            seen.add(prompt)
            rows.append(row)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Write rows as one JSON object per line."""
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    """Generate both splits into the output directory."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    rng = random.Random(SEED)
    train = make_split(rng, N_TRAIN, [(TRAIN_FIRST, TRAIN_LAST, TRAIN_CITIES, TRAIN_TEMPLATES)])
    evaluation = make_split(
        rng,
        N_EVAL,
        [
            (EVAL_FIRST, EVAL_LAST, EVAL_CITIES, EVAL_TEMPLATES),
            (EVAL_FIRST, EVAL_LAST, EVAL_CITIES, TRAIN_TEMPLATES),
        ],
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out_dir / "train.jsonl", train)
    write_jsonl(args.out_dir / "eval.jsonl", evaluation)
    print(f"wrote {len(train)} train and {len(evaluation)} eval rows to {args.out_dir}")


if __name__ == "__main__":
    main()
