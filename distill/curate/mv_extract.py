"""math-verify's `extract_latex`, reading a match's groups once: the same steps, the same outputs.

math-verify's extraction regex has dozens of named groups, and its `extract_latex` (v0.9) rebuilds
`match.groupdict()` and scans it six times per match (once for `first_latex`, once for each of
`next1_latex` .. `next5_latex`): a tenth of a replayed answer's parse. The version here builds the dict
once and finds the six groups in one scan, with the rule unchanged (for each prefix, the first group in
the dict's order whose name starts with it and whose value is non-empty); everything after that is
math-verify's code line for line, calling the same module's functions (so its other patches apply).
`tests/test_verify_fast.py` compares the two on every match of the bench's answers and hand-picked ones.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

PREFIXES = ("first_latex", *(f"next{i}_latex" for i in range(1, 6)))


def latex_groups(match) -> list[tuple[str, str]]:  # noqa: ANN001 (re.Match)
    """(value, name) of the first non-empty group of each prefix in `PREFIXES` that has one, in order."""
    found: dict[str, tuple[str, str]] = {}
    for name, val in match.groupdict().items():
        if val:
            for prefix in PREFIXES:
                if prefix not in found and name.startswith(prefix):
                    found[prefix] = (val, name)
    return [found[p] for p in PREFIXES if p in found]


def fast_extract_latex() -> None:
    """Installs the one-scan `extract_latex` in math-verify's parser module (once per process)."""
    from math_verify import parser

    if getattr(parser.extract_latex, "_distill_fast", False):
        return

    @lru_cache(maxsize=20)  # as math-verify's own (matches are fresh objects, so it rarely hits)
    def extract_latex(match, latex_config):  # noqa: ANN001, ANN202
        latex_exprs, latex_strs = [], []
        groups = match.groupdict()
        for latex, name in latex_groups(match):
            name_without_prefix = name.split("_")[0]
            group_name = name.split("_")[1] if len(name.split("_")) > 1 else None
            is_percentage = bool(groups.get(f"{name_without_prefix}_percent"))
            config = latex_config.normalization_config
            if group_name == "latexBoxed":
                config = replace(config, boxed="last")
            normalized_latex = parser.normalize_latex(latex, config=config)
            latex_strs.append(normalized_latex)
            try:
                parsed_latex = parser.parse_latex_cached(normalized_latex)
                if is_percentage:
                    parsed_latex = parser.convert_to_pct(parsed_latex)
                latex_exprs.append(parsed_latex)
            except Exception:  # noqa: BLE001 (math-verify's own: a failed parse is None)
                latex_exprs.append(None)
        if not latex_exprs:
            return None, ""
        if len(latex_exprs) > 1 and all(expr is not None for expr in latex_exprs):
            all_elements = []
            for expr in latex_exprs:
                if isinstance(expr, parser.FiniteSet):
                    all_elements.extend(expr.args)
                else:
                    all_elements.append(expr)
            return parser.FiniteSet(*all_elements), " and ".join(latex_strs)
        return latex_exprs[0], latex_strs[0]

    extract_latex._distill_fast = True  # type: ignore[attr-defined]
    extract_latex._distill_original = parser.extract_latex  # type: ignore[attr-defined]
    parser.extract_latex = extract_latex
