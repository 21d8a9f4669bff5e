#!/usr/bin/env python3
"""Writes the hostile projects used to measure `rapport check`'s limits (docs/language.md,
"Limits") into OUT_DIR, one folder each:

  deep_yaml/      rapport.yaml nested 100,000 flow levels deep (`brand: [[[...]]]`)
  many_flows/     800 flows, one per file, all starting on the same message
  wide_tokens/    one 64 KB flow whose single `send` line holds 8,000 unknown tokens
  wide_error/     a flow with a syntax error past column 65,536
  long_loop/      one flow of 3,000 states going round in a loop of `->`

Usage: python3 tests/tools/hostile_inputs.py OUT_DIR
       time rapport check OUT_DIR/many_flows | wc -c
"""
import os
import sys

SETTINGS = """brand: Acme Shoes
channels:
  whatsapp: { window: 24h }
"""


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def main(out):
    n = 100_000
    write(f"{out}/deep_yaml/rapport.yaml", "brand: " + "[" * n + "]" * n + "\n")

    write(f"{out}/many_flows/rapport.yaml", SETTINGS)
    for i in range(800):
        write(
            f"{out}/many_flows/f{i:03}.flow",
            f'flow f{i:03} {{\n  start on message "hi"\n  state a {{ send "Hello" end }}\n}}\n',
        )

    write(f"{out}/wide_tokens/rapport.yaml", SETTINGS)
    tokens = "".join(f"{{t{i}}}" for i in range(8000))
    write(
        f"{out}/wide_tokens/wide.flow",
        f'flow wide {{\n  start on message "hi"\n  state a {{ send "{tokens}" end }}\n}}\n',
    )

    write(f"{out}/wide_error/rapport.yaml", SETTINGS)
    write(
        f"{out}/wide_error/wide.flow",
        'flow wide {\n  start on message "hi"\n  state a { send "' + "x" * 70_000 + '" oops }\n}\n',
    )

    write(f"{out}/long_loop/rapport.yaml", SETTINGS)
    n = 3000
    states = "".join(f'  state s{i} {{ send "x" -> s{(i + 1) % n} }}\n' for i in range(n))
    write(f"{out}/long_loop/loop.flow", 'flow loop {\n  start on message "loop"\n' + states + "}\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
