"""The compact string form of a policy (``snapkv(512)+spark(0.8,mean,signed)``): the grammar of the
``sparkv`` CLI's ``--policy`` option and of Swift's ``CompressionPolicy(parsing:)``, read by
:meth:`Policy.parse` and written by :meth:`Policy.compact`. Both languages are tested against one
table (Tests/policy-grammar.json), so a string means the same policy everywhere.

Grammar (``sparkv policy --help`` has the full text)::

    POLICY := TERM ("+" TERM)*        any order, each kind once; case and spaces ignored
    TERM   := NAME "(" ARG ("," ARG)* ")"  |  NAME (":" ARG)*
    stages:  dense | snapkv(B[,K]) | pyramidkv(B[,R[,K]]) | streaming(S,R)
             | spark(R[,REC][,signed|unsigned][,cum=P][,min=N][,max=N]) | think(R) | vprune(R)
    options: kprec(P) vprec(P) qgroup(N) window(W) seed(N) threads(T) scale(X)
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional

from .errors import InvalidPolicyError, Status

_INT = re.compile(r"[+-]?[0-9]+")
_UINT = re.compile(r"\+?[0-9]+")
# Decimal floats as Swift's Float(String) reads them (hex floats are refused on purpose), and inf/nan
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[+-]?[0-9]+)?|[+-]?(?:inf|infinity|nan)")
_RECOVERIES = ("none", "mean", "gaussian", "exponential")
_PRECISIONS = ("f32", "f16", "bf16", "i8", "i4")
_KIND = {"snapkv": "eviction", "pyramidkv": "eviction", "streaming": "eviction", "streamingllm": "eviction",
         "spark": "key pruning", "think": "key pruning"}


def _format_float(x: float) -> str:
    """Shortest exact form of the float32 value, without a trailing ".0" or an exponent "+"."""
    import numpy as np

    f = np.float32(x)
    if np.isfinite(f) and float(f) == round(float(f)) and abs(float(f)) < 1e9:
        return str(int(f))
    return str(f).replace("+", "")


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.fields: Dict[str, object] = {}
        self.seen: set = set()
        self.saw_stage = False
        self.saw_dense = False

    def fail(self, reason: str) -> InvalidPolicyError:
        return InvalidPolicyError(
            Status.INVALID_POLICY, f'cannot read policy "{self.text}": {reason} (the grammar: `sparkv policy --help`)'
        )

    @staticmethod
    def split_terms(s: str) -> List[str]:
        """Splits on "+" outside parentheses, keeping the "+" of an exponent such as "1e+10"."""
        terms, current, depth = [], "", 0
        for ch in s:
            depth += (ch == "(") - (ch == ")")
            exponent = len(current) >= 2 and current[-1] == "e" and (current[-2].isdigit() or current[-2] == ".")
            if ch == "+" and depth == 0 and not exponent:
                terms.append(current)
                current = ""
            else:
                current += ch
        terms.append(current)
        return terms

    def parse(self) -> Dict[str, object]:
        terms = self.split_terms("".join(self.text.lower().split()))
        if not terms or any(t == "" for t in terms):
            raise self.fail("it is empty" if not terms else "it has an empty term")
        for term in terms:
            self.read(term)
        if self.saw_dense and self.saw_stage:
            raise self.fail('"dense" cannot be combined with eviction or pruning terms')
        return self.fields

    def read(self, term: str) -> None:
        if "(" in term:
            if not term.endswith(")"):
                raise self.fail(f'term "{term}" misses its closing parenthesis')
            name, inner = term[: term.index("(")], term[term.index("(") + 1 : -1]
            args = inner.split(",") if inner else []
        else:
            name, *args = term.split(":")
        if any(a == "" for a in args):
            raise self.fail(f'term "{term}" has an empty argument')
        kind = _KIND.get(name, name)
        if kind in self.seen:
            raise self.fail(f"{kind} is given twice")
        self.seen.add(kind)
        f = self.fields
        if name == "dense":
            self.expect(name, args, 0, 0)
            self.saw_dense = True
        elif name == "snapkv":
            self.expect(name, args, 0, 2)
            f.update(eviction="snapkv", evict_budget=self.int(args, 0, name, 512),
                     pool_kernel=self.int(args, 1, name, 5))
            self.saw_stage = True
        elif name == "pyramidkv":
            self.expect(name, args, 0, 3)
            f.update(eviction="pyramidkv", evict_budget=self.int(args, 0, name, 512),
                     pyramid_ratio=self.float(args, 1, name, 4.0), pool_kernel=self.int(args, 2, name, 5))
            self.saw_stage = True
        elif name in ("streaming", "streamingllm"):
            if len(args) not in (0, 2):
                raise self.fail(f"{name} takes two arguments, sink and recent tokens, e.g. {name}(4,508)")
            f.update(eviction="streaming", sink_tokens=self.int(args, 0, name, 4),
                     recent_tokens=self.int(args, 1, name, 508))
            self.saw_stage = True
        elif name in ("spark", "think"):
            self.read_keys(name, args)
            self.saw_stage = True
        elif name == "vprune":
            self.expect(name, args, 1, 1)
            f["value_prune_ratio"] = self.float(args, 0, name, 0.0)
            self.saw_stage = True
        elif name in ("kprec", "vprec"):
            self.expect(name, args, 1, 1)
            if args[0] not in _PRECISIONS:
                raise self.fail(f'{name} precision "{args[0]}" is not f32, f16, bf16, i8 or i4')
            f["key_precision" if name == "kprec" else "value_precision"] = args[0]
        elif name == "qgroup":
            self.expect(name, args, 1, 1)
            f["quant_group"] = self.int(args, 0, name, 32)
        elif name == "decode":
            self.expect(name, args, 0, 1)
            f["compress_decode"] = True
            f["decode_recent"] = self.int(args, 0, name, 32)
        elif name == "window":
            self.expect(name, args, 1, 1)
            f["window"] = self.int(args, 0, name, 32)
        elif name == "seed":
            self.expect(name, args, 1, 1)
            if not _UINT.fullmatch(args[0]) or int(args[0]) >= 2**64:
                raise self.fail(f'seed "{args[0]}" is not an unsigned 64-bit integer')
            f["seed"] = int(args[0])
        elif name == "threads":
            self.expect(name, args, 1, 1)
            f["threads"] = self.int(args, 0, name, 0)
        elif name == "scale":
            self.expect(name, args, 1, 1)
            f["attention_scale"] = self.float(args, 0, name, 0.0)
        else:
            raise self.fail(f'unknown term "{name}"; terms are dense, snapkv, pyramidkv, streaming, spark, think, decode, '
                            "vprune, kprec, vprec, qgroup, window, seed, threads, scale")

    def read_keys(self, name: str, args: List[str]) -> None:
        """spark(...) / think(...): a ratio, a recovery, signed/unsigned and cum=/min=/max=, any order."""
        ratio: Optional[float] = None
        recovery: Optional[str] = None
        signs: Optional[bool] = None
        options: Dict[str, object] = {}
        for arg in args:
            if "=" in arg:
                key, value = arg.split("=", 1)
                if key in ("cum", "cumulative"):
                    key, ok = "cum", _FLOAT.fullmatch(value) is not None
                elif key in ("min", "max"):
                    ok = _INT.fullmatch(value) is not None
                else:
                    raise self.fail(f'{name}: unknown option "{key}" (cum, min and max are known)')
                if key in options or not ok:
                    raise self.fail(f"{name}: bad or repeated {arg}")
                options[key] = float(value) if key == "cum" else int(value)
            elif arg in _RECOVERIES:
                if recovery is not None:
                    raise self.fail(f"{name}: two recovery modes")
                recovery = arg
            elif arg in ("signed", "unsigned"):
                if signs is not None:
                    raise self.fail(f"{name}: signed/unsigned given twice")
                signs = arg == "signed"
            elif _FLOAT.fullmatch(arg):
                if ratio is not None:
                    raise self.fail(f"{name}: two ratios")
                ratio = float(arg)
            else:
                raise self.fail(f'{name}: "{arg}" is not a ratio, a recovery (none, mean, gaussian, exponential), '
                                "signed/unsigned or cum=/min=/max=")
        if "cum" not in options and ("min" in options or "max" in options):
            raise self.fail(f"{name}: min= and max= need cum=P")
        if ratio is None and "cum" not in options:
            raise self.fail(f"{name} needs a ratio, e.g. {name}(0.5)")
        think = name == "think"
        rec = recovery if recovery is not None else ("none" if think else "mean")
        self.fields.update(key_pruning=name, key_prune_ratio=ratio if ratio is not None else 0.0, recovery=rec,
                           sign_bits=signs if signs is not None else (not think and rec != "none"))
        if "cum" in options:
            self.fields.update(selection="cumulative", cumulative_p=options["cum"],
                               cumulative_min_keep=options.get("min", 1), cumulative_max_keep=options.get("max", 0))

    def expect(self, name: str, args: List[str], lo: int, hi: int) -> None:
        if not lo <= len(args) <= hi:
            wanted = f"{lo}" if lo == hi else f"{lo} to {hi}"
            raise self.fail(f"{name} takes {wanted} argument{'' if hi == 1 else 's'}, not {len(args)}")

    def int(self, args: List[str], i: int, name: str, default: int) -> int:
        if i >= len(args):
            return default
        if not _INT.fullmatch(args[i]):
            raise self.fail(f'{name}: "{args[i]}" is not an integer')
        return int(args[i])

    def float(self, args: List[str], i: int, name: str, default: float) -> float:
        if i >= len(args):
            return default
        if not _FLOAT.fullmatch(args[i]):
            raise self.fail(f'{name}: "{args[i]}" is not a number')
        return float(args[i])


def parse_fields(text: str) -> Dict[str, object]:
    """The policy fields (C names) a compact string sets; the others keep their defaults."""
    if not isinstance(text, str):
        raise TypeError(f"a compact policy is a str, got {type(text).__name__}")
    return _Parser(text).parse()


def format_policy(p) -> str:
    """The compact form of a Policy: stages in pipeline order, then the options that differ from
    the defaults; ``dense`` when nothing is evicted or pruned. SparK always lists its recovery and
    sign bits. Reading it back with parse gives an equal policy."""
    stages: List[str] = []
    ev = p.eviction.name.lower()
    if ev == "snapkv":
        stages.append(f"snapkv({p.evict_budget})" if p.pool_kernel == 5 else f"snapkv({p.evict_budget},{p.pool_kernel})")
    elif ev == "pyramidkv":
        args = [str(p.evict_budget)]
        if p.pyramid_ratio != 4 or p.pool_kernel != 5:
            args.append(_format_float(p.pyramid_ratio))
        if p.pool_kernel != 5:
            args.append(str(p.pool_kernel))
        stages.append(f"pyramidkv({','.join(args)})")
    elif ev == "streaming":
        stages.append(f"streaming({p.sink_tokens},{p.recent_tokens})")
    cumulative = p.selection.name.lower() == "cumulative"
    cum_args: List[str] = []
    if cumulative:
        cum_args = [f"cum={_format_float(p.cumulative_p)}"]
        if p.cumulative_min_keep != 1:
            cum_args.append(f"min={p.cumulative_min_keep}")
        if p.cumulative_max_keep != 0:
            cum_args.append(f"max={p.cumulative_max_keep}")
    ratio = [_format_float(p.key_prune_ratio)] if p.key_prune_ratio != 0 or not cum_args else []
    rec = p.recovery.name.lower()
    if p.key_pruning.name.lower() == "spark":
        if not (p.key_prune_ratio == 0 and not cum_args and rec == "mean" and p.sign_bits):
            stages.append(f"spark({','.join(ratio + cum_args + [rec, 'signed' if p.sign_bits else 'unsigned'])})")
    else:
        args = ratio + cum_args + ([rec] if rec != "none" else []) + (["signed"] if p.sign_bits else [])
        stages.append(f"think({','.join(args)})")
    if p.value_prune_ratio != 0:
        stages.append(f"vprune({_format_float(p.value_prune_ratio)})")
    if not stages:
        stages.append("dense")
    if p.key_precision.name.lower() != "f16":
        stages.append(f"kprec({p.key_precision.name.lower()})")
    if p.value_precision.name.lower() != "f16":
        stages.append(f"vprec({p.value_precision.name.lower()})")
    if p.quant_group != 32:
        stages.append(f"qgroup({p.quant_group})")
    if p.compress_decode:
        stages.append(f"decode({p.decode_recent})")
    if p.window != 32:
        stages.append(f"window({p.window})")
    if p.seed != 0:
        stages.append(f"seed({p.seed})")
    if p.threads != 0:
        stages.append(f"threads({p.threads})")
    if p.attention_scale != 0:
        stages.append(f"scale({_format_float(p.attention_scale)})")
    return "+".join(stages)
