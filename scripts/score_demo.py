"""Score a model (optionally with a LoRA adapter) on the bundled JSON-extraction eval split."""

import argparse
import json
from pathlib import Path

EVAL_PATH = Path(__file__).resolve().parent.parent / "backend" / "app" / "demo" / "json_extract" / "eval.jsonl"


def main() -> None:
    """Load the model, score exact match on eval.jsonl and print the result as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="saved Hugging Face model directory")
    parser.add_argument("--adapter", help="PEFT adapter directory to apply on top of --model")
    parser.add_argument("--data", type=Path, default=EVAL_PATH, help="JSONL file of chat rows")
    parser.add_argument("--examples", action="store_true", help="also print the first prediction examples")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from app.sft.evaluation import load_rows, score_exact_match

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    if args.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter)
    result = score_exact_match(model, tokenizer, load_rows(args.data))
    keys = ("exact_match", "n", "examples") if args.examples else ("exact_match", "n")
    print(json.dumps({k: result[k] for k in keys}, ensure_ascii=False))


if __name__ == "__main__":
    main()
