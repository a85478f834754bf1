"""Factories and mutation strategies for the reader reliability tests (imported as
``readers_factories``): tiny valid inputs of every reader, and hypothesis strategies that
damage them the way real files get damaged (bad bytes, cut lines, repeated rows, hostile
numbers, deep nesting)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from llmsim.errors import LlmsimError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

MODEL_CFG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"], "hidden_size": 8, "intermediate_size": 16,
    "num_attention_heads": 2, "num_key_value_heads": 1, "num_hidden_layers": 2,
    "vocab_size": 32, "torch_dtype": "bfloat16",
}
MOE_CFG: dict[str, Any] = {
    "architectures": ["Qwen3MoeForCausalLM"], "hidden_size": 16, "head_dim": 8,
    "intermediate_size": 32, "moe_intermediate_size": 8, "num_attention_heads": 4,
    "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 64, "num_experts": 4,
    "num_experts_per_tok": 2, "torch_dtype": "bfloat16", "tie_word_embeddings": False,
}
DENSE_OPS = ("layernorm", "qkv_proj", "rotary_emb", "o_proj", "gate_up_proj", "act_fn",
             "down_proj", "embedding", "final_layernorm")
SKEW_HEADER = ("regime,n,nb,ratio,skew,pc,kp,kvs,kv_big,kv_mean,t_mean_us,t_max_us,t_skew_us,"
               "alpha")
SKEW_FIT_HEADER = "pc,n_label,skew_rate_label,kv_big_label,kp_label,alpha,n_samples"
META_SKEW_FIT = """skew_fit:
  enabled: true
  bucket_axes:
    n_bins: [0, 2, 1000000]
    n_labels: [n<=2, n>2]
    skew_rate_bins: [-0.01, 0.5, 1.01]
    skew_rate_labels: [sr<=50%, sr>50%]
    kv_big_bins: [0, 1024, 1000000000]
    kv_big_labels: [kvB<=1k, kvB>1k]
    kp_bins: [-1, 0, 1000000000]
    kp_labels: [kp=0, kp>0]
  per_tp:
    1:
      method: per_bucket_wls_5axis
      n_samples: 4
      alpha_default: 0.05
      rel_err_p50: 0.01
"""


def bundle_files() -> dict[str, str]:
    """Text of every file of a tiny valid bundle (TP 1, with skew samples and a fit)."""
    dense = ["layer,tokens,time_us"] + [f"{op},{t},{t + 1.5}" for op in DENSE_OPS
                                        for t in (1, 2, 4)]
    per_seq = ["layer,sequences,time_us"] + [f"{op},{s},{10 * s}" for op in
                                             ("lm_head", "sampler") for s in (1, 2)]
    att = ["prefill_chunk,kv_prefill,n_decode,kv_decode,time_us"]
    att += [f"0,0,{n},{kv},{n * kv / 10}" for n in (1, 2) for kv in (16, 32)]
    att += [f"{pc},{kp},0,0,{pc + kp}" for pc in (16, 32) for kp in (0, 16)]
    att += [f"{pc},{kp},{n},{kv},{pc + kp + n * kv}" for pc in (16, 32) for kp in (0, 16)
            for n in (1, 2) for kv in (16, 32)]
    skew = [SKEW_HEADER, "pure,2,1,0.5,4.0,0,0,128,512,320,52.128,56.254,53.343,0.2945",
            "pure,2,1,0.5,4.0,0,0,256,1024,640,59.68,75.264,60.895,0.078",
            "mixed,4,2,0.5,4.0,16,0,128,512,320,,,,"]
    fit = [SKEW_FIT_HEADER, "0,n<=2,sr<=50%,kvB<=1k,kp=0,0.0317,4",
           "16,n>2,sr>50%,kvB>1k,kp>0,0.0271,2"]
    meta = ("model: org/tiny\nhardware: HW\ngpu: Test GPU\nvariant: bf16\n"
            "tp_degrees: [1]\nmeasurement_iterations: 3\n" + META_SKEW_FIT)
    return {
        "meta.yaml": meta,
        "tp1/dense.csv": "\n".join(dense) + "\n",
        "tp1/per_sequence.csv": "\n".join(per_seq) + "\n",
        "tp1/attention.csv": "\n".join(att) + "\n",
        "tp1/skew.csv": "\n".join(skew) + "\n",
        "tp1/skew_fit.csv": "\n".join(fit) + "\n",
    }


MOE_DENSE_OPS = ("layernorm", "qkv_proj", "qk_norm", "rotary_emb", "o_proj", "embedding",
                 "final_layernorm")


def moe_bundle_files() -> dict[str, str]:
    """:func:`bundle_files` of a tiny MoE model (Qwen3-MoE layout: experts in ``moe.csv``,
    no dense FFN ops)."""
    files = bundle_files()
    dense = ["layer,tokens,time_us"] + [f"{op},{t},{t + 1.5}" for op in MOE_DENSE_OPS
                                        for t in (1, 2, 4)]
    moe = ["tokens,activated_experts,time_us"] + [f"{t},{e},{10 * t + e}" for t in (1, 2, 4, 8)
                                                  for e in (2, 4)]
    files["tp1/dense.csv"] = "\n".join(dense) + "\n"
    files["tp1/moe.csv"] = "\n".join(moe) + "\n"
    return files


def write_bundle(root: Path, files: dict[str, str | bytes] | None = None, *,
                 model_cfg: dict[str, Any] | None = None, moe: bool = False) -> Path:
    """A tiny bundle at ``root/profiles/HW/org/tiny/bf16`` (model config next to it);
    ``files`` replaces files by bundle-relative path (text or raw bytes); ``moe`` gives the
    MoE variant (:data:`MOE_CFG`, :func:`moe_bundle_files`)."""
    bundle = root / "profiles" / "HW" / "org" / "tiny" / "bf16"
    cfg_dir = root / "configs" / "model" / "org"
    cfg_dir.mkdir(parents=True, exist_ok=True)
    (cfg_dir / "tiny.json").write_text(json.dumps(model_cfg or (MOE_CFG if moe else MODEL_CFG)))
    base = moe_bundle_files() if moe else bundle_files()
    for rel, content in {**base, **(files or {})}.items():
        path = bundle / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return bundle


def vidur_files() -> dict[str, str]:
    """A tiny Vidur network directory: one all_reduce table with a repeated measurement."""
    header = (",time_stats.all_reduce.min,time_stats.all_reduce.max,time_stats.all_reduce.mean,"
              "time_stats.all_reduce.median,time_stats.all_reduce.std,rank,num_workers,size,"
              "collective,devices_per_node,max_devices_per_node")
    rows = [header]
    i = 0
    for size in (1024, 4096, 16384):
        for rep in range(2 if size == 4096 else 1):  # 4096 measured twice, as in Vidur
            t = size / 1e6 + 0.01 * (1 + rep)
            rows.append(f"{i},{t * 0.9:.6f},{t * 1.1:.6f},{t:.6f},{t:.6f},0.001,0,2,{size},"
                        f"all_reduce,2,8")
            i += 1
    return {"all_reduce.csv": "\n".join(rows) + "\n"}


def write_dir(root: Path, files: dict[str, str | bytes]) -> Path:
    """Write ``files`` (relative path -> text or bytes) under ``root``."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def load_or_error(fn: Callable[[], Any]) -> Any:
    """``fn()``, or None when it raised an :class:`LlmsimError` that says where.

    Any other exception (a traceback) propagates and fails the calling test.
    """
    try:
        return fn()
    except LlmsimError as exc:
        assert str(exc), "an LlmsimError without a message"
        if hasattr(exc, "path"):
            assert exc.path is not None or exc.field is not None, f"unlocated error: {exc}"
        return None


# ------------------------------------------------------------------------ mutation strategies

NASTY_TOKENS = [
    "nan", "NaN", "inf", "-inf", "Infinity", "-1", "-0", "0", "1e999", "1e-999",
    "99999999999999999999999", "9223372036854775808", "1e999999999", "1.5", "", " ", "x",
    "true", "null", "[]", "{}", '"', ",", "\x00", "\ufeff", "\u00e9", "\ud7ff",
]
NASTY_BYTES = [b"\xff", b"\xfe\xfe", b"\xc3", b"\x00", b"\r", b"\n", b"\n\n", b",", b'"',
               b"[" * 200, b"{" * 100 + b'"a":', b"\xef\xbb\xbf"]


@st.composite
def mutated_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` after 1-3 random edits: replace a slice with hostile bytes or a hostile token,
    delete a slice, duplicate or drop a line, or truncate."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["bytes", "token", "delete", "dup_line", "drop_line",
                                   "truncate"]))
        n = len(out)
        i = draw(st.integers(0, max(n - 1, 0)))
        j = min(n, i + draw(st.integers(0, 12)))
        if op == "bytes":
            out[i:j] = draw(st.sampled_from(NASTY_BYTES) | st.binary(min_size=1, max_size=4))
        elif op == "token":
            out[i:j] = draw(st.sampled_from(NASTY_TOKENS)).encode("utf-8", "surrogatepass")
        elif op == "delete":
            del out[i:j]
        elif op in ("dup_line", "drop_line"):
            lines = bytes(out).split(b"\n")
            k = draw(st.integers(0, len(lines) - 1))
            if op == "dup_line":
                lines.insert(k, lines[k])
            else:
                del lines[k]
            out = bytearray(b"\n".join(lines))
        else:
            del out[i:]
    return bytes(out)


@st.composite
def mutated_cells(draw: st.DrawFn, text: str) -> str:
    """CSV ``text`` with 1-3 cells (never the header) replaced by hostile tokens or copied
    from another row."""
    lines = text.rstrip("\n").split("\n")
    for _ in range(draw(st.integers(1, 3))):
        r = draw(st.integers(1, len(lines) - 1))
        cells = lines[r].split(",")
        c = draw(st.integers(0, len(cells) - 1))
        other = lines[draw(st.integers(1, len(lines) - 1))].split(",")
        choice = draw(st.sampled_from(["token", "copy", "number"]))
        if choice == "token":
            cells[c] = draw(st.sampled_from(NASTY_TOKENS))
        elif choice == "copy" and c < len(other):
            cells[c] = other[c]
        else:
            cells[c] = repr(draw(st.floats(allow_nan=True, allow_infinity=True)))
        lines[r] = ",".join(cells)
    return "\n".join(lines) + "\n"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=6,
)
"""Any JSON value (ints beyond int64 included: the readers must refuse those, not crash)."""
