#!/usr/bin/env bash
# Hugging Face GPT-2 safetensors through `myelin train`: the same random
# weights written by an independent Python writer as an llm.c file and as F32,
# BF16 and F16 safetensors (Hugging Face's GPT2LMHeadModel names, Conv1D
# weights [in, out], V rows of wte) train to identical losses wherever the
# values are identical; --save X.safetensors writes weights and config.json
# that load back exactly; malformed checkpoints exit 2 with one line naming
# the tensor or field. The same for a Llama-family model (LlamaForCausalLM
# names, GQA, untied head, Llama 3 rope scaling) against Myelin's Llama model
# file, written here from its documented header. Python: struct and json only.
source "$(dirname "$0")/common.sh" "$@"
"$MYELIN" data synthetic --out data --examples 2000 >/dev/null
data=(--train-data 'data/addition_train_*.bin' --seq-len 16 --batch-size 2 --lr 1e-3 --quiet)

cat > hf.py <<'PY'
import json, os, random, struct, sys

V, VP, L, NH, C, T = 200, 256, 2, 2, 16, 16

def llmc_order():
    """Tensor shapes in llm.c's order (weights [out, in])."""
    return [("wte", (VP, C)), ("wpe", (T, C)), ("ln1w", (L, C)), ("ln1b", (L, C)),
            ("qkvw", (L, 3 * C, C)), ("qkvb", (L, 3 * C)), ("attprojw", (L, C, C)),
            ("attprojb", (L, C)), ("ln2w", (L, C)), ("ln2b", (L, C)), ("fcw", (L, 4 * C, C)),
            ("fcb", (L, 4 * C)), ("fcprojw", (L, C, 4 * C)), ("fcprojb", (L, C)),
            ("lnfw", (C,)), ("lnfb", (C,))]

def count(shape):
    n = 1
    for d in shape:
        n *= d
    return n

def random_params(seed):
    rng = random.Random(seed)
    p = {}
    for name, shape in llmc_order():
        if name in ("ln1w", "ln2w", "lnfw"):
            p[name] = [1.0 + rng.gauss(0, 0.05) for _ in range(count(shape))]
        else:
            p[name] = [rng.gauss(0, 0.1) for _ in range(count(shape))]
    p["wte"][V * C:] = [0.0] * ((VP - V) * C)  # padding rows: not stored in HF files
    return p

def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]

def bf16_bits(x):
    u = struct.unpack("<I", struct.pack("<f", x))[0]
    return (u + 0x7FFF + ((u >> 16) & 1)) >> 16

def rounded(p, dtype):
    if dtype == "F16":
        r = lambda x: struct.unpack("<e", struct.pack("<e", x))[0]
    elif dtype == "BF16":
        r = lambda x: struct.unpack("<f", struct.pack("<I", bf16_bits(x) << 16))[0]
    else:
        r = f32
    return {k: [r(x) for x in v] for k, v in p.items()}

def write_llmc(path, p):
    hdr = [20240326, 3, T, V, L, NH, C, VP] + [0] * 248
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", *hdr))
        for name, _ in llmc_order():
            f.write(struct.pack("<%df" % len(p[name]), *p[name]))

def transpose(v, rows, cols):  # v is [rows, cols]
    return [v[r * cols + c] for c in range(cols) for r in range(rows)]

def hf_tensors(p):
    """(name, shape, values) under GPT2LMHeadModel's names."""
    out = [("wte.weight", [V, C], p["wte"][:V * C]), ("wpe.weight", [T, C], p["wpe"])]
    def per(name, l, n):
        return p[name][l * n:(l + 1) * n]
    for l in range(L):
        h = "h.%d." % l
        out += [(h + "ln_1.weight", [C], per("ln1w", l, C)), (h + "ln_1.bias", [C], per("ln1b", l, C)),
                (h + "attn.c_attn.weight", [C, 3 * C], transpose(per("qkvw", l, 3 * C * C), 3 * C, C)),
                (h + "attn.c_attn.bias", [3 * C], per("qkvb", l, 3 * C)),
                (h + "attn.c_proj.weight", [C, C], transpose(per("attprojw", l, C * C), C, C)),
                (h + "attn.c_proj.bias", [C], per("attprojb", l, C)),
                (h + "ln_2.weight", [C], per("ln2w", l, C)), (h + "ln_2.bias", [C], per("ln2b", l, C)),
                (h + "mlp.c_fc.weight", [C, 4 * C], transpose(per("fcw", l, 4 * C * C), 4 * C, C)),
                (h + "mlp.c_fc.bias", [4 * C], per("fcb", l, 4 * C)),
                (h + "mlp.c_proj.weight", [4 * C, C], transpose(per("fcprojw", l, 4 * C * C), C, 4 * C)),
                (h + "mlp.c_proj.bias", [C], per("fcprojb", l, C))]
    out += [("ln_f.weight", [C], p["lnfw"]), ("ln_f.bias", [C], p["lnfb"])]
    return out

def encode(values, dtype):
    if dtype == "F32":
        return struct.pack("<%df" % len(values), *values)
    if dtype == "F16":
        return struct.pack("<%de" % len(values), *values)
    if dtype == "BF16":
        return struct.pack("<%dH" % len(values), *[bf16_bits(x) for x in values])
    if dtype == "I64":
        return struct.pack("<%dq" % len(values), *[0] * len(values))
    raise ValueError(dtype)

def write_st(path, tensors, header_len=None, edit=None, cut=0):
    """tensors: (name, dtype, shape, values). edit(header) may change the header."""
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for name, dtype, shape, values in tensors:
        b = encode(values, dtype)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(b)]}
        data += b
    if edit:
        edit(header)
    text = json.dumps(header).encode()
    blob = struct.pack("<Q", len(text) if header_len is None else header_len) + text + data
    with open(path, "wb") as f:
        f.write(blob[:len(blob) - cut])

def write_config(folder, **override):
    cfg = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": C, "n_head": NH,
           "n_layer": L, "n_positions": T, "n_ctx": T, "vocab_size": V,
           "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5}
    cfg.update(override)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f)

def read_st(path):
    """name -> (dtype, shape, floats) for F32/BF16 files."""
    blob = open(path, "rb").read()
    n = struct.unpack("<Q", blob[:8])[0]
    header, data = json.loads(blob[8:8 + n]), blob[8 + n:]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b = data[t["data_offsets"][0]:t["data_offsets"][1]]
        if t["dtype"] == "F32":
            v = list(struct.unpack("<%df" % (len(b) // 4), b))
        else:
            v = [struct.unpack("<f", struct.pack("<I", h << 16))[0]
                 for h in struct.unpack("<%dH" % (len(b) // 2), b)]
        out[name] = (t["dtype"], t["shape"], v)
    return out

def read_llmc(path):
    blob = open(path, "rb").read()
    return list(struct.unpack("<%df" % ((len(blob) - 1024) // 4), blob[1024:]))

def mkdir(d):
    os.makedirs(d, exist_ok=True)
    return d

if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "make":
        p = random_params(11)
        write_llmc("ref.bin", p)
        for dtype in ("F32", "BF16", "F16"):
            d = mkdir(dtype.lower())
            write_st(os.path.join(d, "model.safetensors"),
                     [(n, dtype, s, v) for n, s, v in hf_tensors(p)])
            write_config(d)
            write_llmc("ref_%s.bin" % dtype.lower(), rounded(p, dtype))
        # Two shards with an index, names with the "transformer." prefix.
        d = mkdir("sharded")
        ts = [("transformer." + n, "F32", s, v) for n, s, v in hf_tensors(p)]
        write_st(os.path.join(d, "model-00001-of-00002.safetensors"), ts[:9])
        write_st(os.path.join(d, "model-00002-of-00002.safetensors"), ts[9:])
        wm = {t[0]: "model-0000%d-of-00002.safetensors" % (1 if i < 9 else 2) for i, t in enumerate(ts)}
        json.dump({"metadata": {}, "weight_map": wm}, open(os.path.join(d, "model.safetensors.index.json"), "w"))
        write_config(d)
    elif cmd == "bad":
        p = random_params(11)
        good = [(n, "F32", s, v) for n, s, v in hf_tensors(p)]
        def case(name, tensors=good, config=None, **kw):
            d = mkdir("bad_" + name)
            write_st(os.path.join(d, "model.safetensors"), tensors, **kw)
            write_config(d, **(config or {}))
        renamed = [(("h.0.ln_1.wieght" if n == "h.0.ln_1.weight" else n), t, s, v) for n, t, s, v in good]
        case("name", renamed)
        case("shape", [(n, t, ([C * 3, C] if n == "h.1.attn.c_attn.weight" else s), v) for n, t, s, v in good])
        case("dtype", [(n, ("I64" if n == "ln_f.bias" else t), s, v) for n, t, s, v in good])
        def overlap(h):
            h["wpe.weight"]["data_offsets"] = [h["wpe.weight"]["data_offsets"][0] - 4,
                                               h["wpe.weight"]["data_offsets"][1] - 4]
        case("overlap", edit=overlap)
        def past(h):
            h["ln_f.bias"]["data_offsets"] = [h["ln_f.bias"]["data_offsets"][0] + 4096,
                                              h["ln_f.bias"]["data_offsets"][1] + 4096]
        case("past", edit=past)
        case("hlen", header_len=10 ** 7)
        case("trunc", cut=100)
        case("config", config={"n_embd": 32})
        case("heads", config={"n_head": 3})
        case("llama", config={"model_type": "llama", "hidden_size": 16, "intermediate_size": 64,
                              "num_attention_heads": 2, "num_hidden_layers": 2,
                              "max_position_embeddings": T, "vocab_size": V})
        for name, shard in (("missing", "model-00002-of-00002.safetensors"),
                            ("escape", "../f32/model.safetensors")):
            d = mkdir("bad_" + name)
            write_st(os.path.join(d, "model-00001-of-00002.safetensors"), good)
            wm = {t[0]: "model-00001-of-00002.safetensors" for t in good}
            wm["wpe.weight"] = shard
            json.dump({"weight_map": wm}, open(os.path.join(d, "model.safetensors.index.json"), "w"))
            write_config(d)
    elif cmd == "same-params":
        # A saved .safetensors (HF layout) and a saved llm.c file hold the same values.
        st, ref = read_st(sys.argv[2]), read_llmc(sys.argv[3])
        p, at = {}, 0
        for name, shape in llmc_order():
            p[name] = ref[at:at + count(shape)]
            at += count(shape)
        want = {n: (s, v) for n, s, v in hf_tensors(p)}
        names = {n[len("transformer."):] if n.startswith("transformer.") else n for n in st}
        assert names == set(want), sorted(names ^ set(want))
        for n, (dtype, shape, v) in st.items():
            bare = n[len("transformer."):] if n.startswith("transformer.") else n
            assert dtype == "F32" and shape == want[bare][0], (n, dtype, shape)
            assert v == [f32(x) for x in want[bare][1]], n
        print("same parameters in", len(st), "tensors")
PY
python3 hf.py make

run() { # run NAME MODEL [ARGS...]: 3 steps from MODEL, metrics in NAME.jsonl
  local name=$1 model=$2
  shift 2
  "$MYELIN" train --model "$model" "${data[@]}" --steps 3 --metrics-out "$name.jsonl" "$@"
  [ "$(wc -l <"$name.jsonl")" = 3 ] || fail "$name: expected 3 metrics lines"
}
same_losses() { [ "$(losses "$1.jsonl")" = "$(losses "$2.jsonl")" ] || fail "$1 and $2 differ: $(losses "$1.jsonl" | tr '\n' ' ') vs $(losses "$2.jsonl" | tr '\n' ' ')"; }

run ref ref.bin
run f32 f32/model.safetensors
same_losses ref f32
run dir f32
same_losses ref dir
run sharded sharded/model.safetensors.index.json
same_losses ref sharded
for dt in bf16 f16; do
  run "$dt" "$dt/model.safetensors"
  run "ref_$dt" "ref_$dt.bin"
  same_losses "ref_$dt" "$dt"
done
# BF16 weights train within bf16 tolerance of the fp32 ones.
paste <(losses ref.jsonl) <(losses bf16.jsonl) | awk '{d = $1 - $2; if (d < 0) d = -d;
  if (d > 0.02 * $1) { print "bf16 loss " $2 " vs fp32 " $1; exit 1 }}' || fail "bf16 losses"
echo "losses: llm.c = F32 = folder = shards: $(losses ref.jsonl | tr '\n' ' ')"

# Save as safetensors and as llm.c from the same run; both hold the same
# parameters (checked by the Python reader) and train on identically.
mkdir -p out out16
run save_st f32/model.safetensors --save out/trained.safetensors
run save_bin f32/model.safetensors --save out/trained.bin
[ -f out/config.json ] || fail "--save X.safetensors wrote no config.json"
python3 hf.py same-params out/trained.safetensors out/trained.bin
run again_st out/trained.safetensors
run again_bin out/trained.bin
same_losses again_st again_bin
run save_bf16 f32/model.safetensors --save out16/trained.safetensors --save-bf16
run again_bf16 out16/trained.safetensors
python3 - <<'PY'
import json, struct
blob = open("out16/trained.safetensors", "rb").read()
h = json.loads(blob[8:8 + struct.unpack("<Q", blob[:8])[0]])
assert {t["dtype"] for n, t in h.items() if n != "__metadata__"} == {"BF16"}, "not all BF16"
PY

# Malformed checkpoints: exit 2, one line naming the tensor or field.
python3 hf.py bad
expect2 "tensor h.0.ln_1.weight is missing" train --model bad_name/model.safetensors "${data[@]}"
expect2 "tensor h.1.attn.c_attn.weight: shape [48, 16], expected [16, 48]" train --model bad_shape "${data[@]}"
expect2 "tensor ln_f.bias: dtype I64 is not supported" train --model bad_dtype "${data[@]}"
expect2 "tensor wpe.weight: data_offsets overlap tensor wte.weight" train --model bad_overlap "${data[@]}"
expect2 "tensor ln_f.bias: data_offsets: end" train --model bad_past "${data[@]}"
expect2 "header length 10000000 runs past the end of the file" train --model bad_hlen "${data[@]}"
expect2 "bad_trunc/model.safetensors: tensor ln_f.bias: data_offsets: end 40192 is past the end" train --model bad_trunc "${data[@]}"
expect2 "tensor wte.weight: shape [200, 16], expected [200, 32]" train --model bad_config "${data[@]}"
expect2 "bad_llama/model.safetensors: tensor model.embed_tokens.weight is missing" train --model bad_llama "${data[@]}"
expect2 "weight_map names shard model-00002-of-00002.safetensors, which does not exist" train --model bad_missing "${data[@]}"
expect2 "weight_map: wpe.weight: shard '../f32/model.safetensors' must be a plain file name" train --model bad_escape "${data[@]}"
expect2 "bad_heads/config.json: n_embd: 16 is not a multiple of heads (3)" train --model bad_heads "${data[@]}"
echo "ok: $n bad GPT-2 inputs refused"

# Llama family: safetensors + config.json against Myelin's Llama model file.
cat > llama.py <<'PY'
import json, os, random, struct, sys
from hf import bf16_bits, count, encode, f32, mkdir, read_st, rounded, write_st

V, VP, L, NH, NKV, C, I, T = 200, 256, 2, 4, 2, 16, 24, 16
D = C // NH
Q = (NH + 2 * NKV) * D

def layout():
    """Myelin's buffer order (runtime/model/config.h), Llama's non-empty tensors."""
    return [("wte", VP * C), ("ln1w", L * C), ("qkvw", L * Q * C), ("attprojw", L * C * C),
            ("ln2w", L * C), ("fcw", L * 2 * I * C), ("fcprojw", L * C * I), ("lnfw", C),
            ("lm_head", VP * C)]

def random_params(seed):
    rng = random.Random(seed)
    p = {}
    for name, n in layout():
        norm = name in ("ln1w", "ln2w", "lnfw")
        p[name] = [(1.0 + rng.gauss(0, 0.05)) if norm else rng.gauss(0, 0.1) for _ in range(n)]
    for name in ("wte", "lm_head"):
        p[name][V * C:] = [0.0] * ((VP - V) * C)
    return p

def config(**override):
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": C,
           "intermediate_size": I, "num_attention_heads": NH, "num_key_value_heads": NKV,
           "num_hidden_layers": L, "max_position_embeddings": T, "vocab_size": V,
           "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
           "hidden_act": "silu", "rope_scaling": {"rope_type": "llama3", "factor": 4.0,
           "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8}}
    cfg.update(override)
    return cfg

def write_native(path, p):
    words = [20261201, 3, T, V, L, NH, C, VP, NKV, I, 0, 1,
             struct.unpack("<i", struct.pack("<f", 1e-5))[0]]
    for x in (10000.0, 4.0, 1.0, 4.0, 8.0):
        words += list(struct.unpack("<2i", struct.pack("<d", x)))
    words += [0] * (256 - len(words))
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", *words))
        for name, _ in layout():
            f.write(struct.pack("<%df" % len(p[name]), *p[name]))

def read_native(path):
    blob = open(path, "rb").read()
    assert struct.unpack("<i", blob[:4])[0] == 20261201, "not a Llama model file"
    v = list(struct.unpack("<%df" % ((len(blob) - 1024) // 4), blob[1024:]))
    p, at = {}, 0
    for name, n in layout():
        p[name], at = v[at:at + n], at + n
    return p

def hf_tensors(p):
    """(name, shape, values) under LlamaForCausalLM's names."""
    rows = lambda name, first, n, width: p[name][first * width:(first + n) * width]
    out = [("model.embed_tokens.weight", [V, C], p["wte"][:V * C])]
    for l in range(L):
        h = "model.layers.%d." % l
        out += [(h + "input_layernorm.weight", [C], rows("ln1w", l, 1, C)),
                (h + "self_attn.q_proj.weight", [NH * D, C], rows("qkvw", l * Q, NH * D, C)),
                (h + "self_attn.k_proj.weight", [NKV * D, C], rows("qkvw", l * Q + NH * D, NKV * D, C)),
                (h + "self_attn.v_proj.weight", [NKV * D, C],
                 rows("qkvw", l * Q + (NH + NKV) * D, NKV * D, C)),
                (h + "self_attn.o_proj.weight", [C, C], rows("attprojw", l * C, C, C)),
                (h + "post_attention_layernorm.weight", [C], rows("ln2w", l, 1, C)),
                (h + "mlp.gate_proj.weight", [I, C], rows("fcw", l * 2 * I, I, C)),
                (h + "mlp.up_proj.weight", [I, C], rows("fcw", l * 2 * I + I, I, C)),
                (h + "mlp.down_proj.weight", [C, I], rows("fcprojw", l * C, C, I))]
    return out + [("model.norm.weight", [C], p["lnfw"]), ("lm_head.weight", [V, C], p["lm_head"][:V * C])]

def write_dir(d, p, dtype="F32", tensors=None, cfg=None, **kw):
    mkdir(d)
    ts = tensors if tensors is not None else [(n, dtype, s, v) for n, s, v in hf_tensors(p)]
    write_st(os.path.join(d, "model.safetensors"), ts, **kw)
    json.dump(cfg or config(), open(os.path.join(d, "config.json"), "w"))

if __name__ == "__main__":
    cmd = sys.argv[1]
    p = random_params(13)
    if cmd == "make":
        write_native("llama_ref.bin", p)
        write_native("llama_ref_bf16.bin", rounded(p, "BF16"))
        write_dir("llama_f32", p)
        write_dir("llama_bf16", p, "BF16")
    elif cmd == "bad":
        good = [(n, "F32", s, v) for n, s, v in hf_tensors(p)]
        ren = lambda old, new: [((new if n == old else n), t, s, v) for n, t, s, v in good]
        write_dir("lbad_name", p, tensors=ren("model.layers.1.mlp.up_proj.weight", "model.layers.1.mlp.upproj.weight"))
        write_dir("lbad_shape", p, tensors=[(n, t, ([C, NKV * D] if n.endswith("0.self_attn.v_proj.weight") else s), v)
                                            for n, t, s, v in good])
        write_dir("lbad_dtype", p, tensors=[(n, ("I64" if n == "model.norm.weight" else t), s, v) for n, t, s, v in good])
        write_dir("lbad_kv", p, cfg=config(num_key_value_heads=4))
        write_dir("lbad_tied", p, cfg=config(tie_word_embeddings=True))
        write_dir("lbad_bias", p, cfg=config(attention_bias=True))
        write_dir("lbad_rope", p, cfg=config(rope_scaling={"rope_type": "dynamic", "factor": 2.0}))
        write_dir("lbad_trunc", p, cut=64)
        def overlap(h):
            o = h["model.layers.0.input_layernorm.weight"]["data_offsets"]
            h["model.layers.0.input_layernorm.weight"]["data_offsets"] = [o[0] - 8, o[1] - 8]
        write_dir("lbad_overlap", p, edit=overlap)
    elif cmd == "same-params":
        st, want = read_st(sys.argv[2]), {n: (s, v) for n, s, v in hf_tensors(read_native(sys.argv[3]))}
        assert set(st) == set(want), sorted(set(st) ^ set(want))
        for n, (dtype, shape, v) in st.items():
            assert dtype == "F32" and shape == want[n][0], (n, dtype, shape)
            assert v == [f32(x) for x in want[n][1]], n
        cfg = json.load(open(os.path.join(os.path.dirname(sys.argv[2]), "config.json")))
        for k, v in config().items():
            if k != "architectures":
                assert cfg[k] == v, (k, cfg[k], v)
        print("same Llama parameters in", len(st), "tensors; config.json fields as written")
PY
python3 llama.py make
run llama_ref llama_ref.bin
run llama_f32 llama_f32/model.safetensors
same_losses llama_ref llama_f32
run llama_ref_bf16 llama_ref_bf16.bin
run llama_bf16 llama_bf16
same_losses llama_ref_bf16 llama_bf16
paste <(losses llama_ref.jsonl) <(losses llama_bf16.jsonl) | awk '{d = $1 - $2; if (d < 0) d = -d;
  if (d > 0.02 * $1) { print "bf16 loss " $2 " vs fp32 " $1; exit 1 }}' || fail "Llama bf16 losses"
mkdir -p lout
run llama_save_st llama_f32 --save lout/trained.safetensors
run llama_save_bin llama_f32 --save lout/trained.bin
python3 llama.py same-params lout/trained.safetensors lout/trained.bin
run llama_again_st lout/trained.safetensors
run llama_again_bin lout/trained.bin
same_losses llama_again_st llama_again_bin
echo "Llama losses: model file = F32 safetensors: $(losses llama_ref.jsonl | tr '\n' ' ')"
python3 llama.py bad
n=0
expect2 "tensor model.layers.1.mlp.up_proj.weight is missing" train --model lbad_name "${data[@]}"
expect2 "tensor model.layers.0.self_attn.v_proj.weight: shape [16, 8], expected [8, 16]" train --model lbad_shape "${data[@]}"
expect2 "tensor model.norm.weight: dtype I64 is not supported" train --model lbad_dtype "${data[@]}"
expect2 "tensor model.layers.0.self_attn.k_proj.weight: shape [8, 16], expected [16, 16]" train --model lbad_kv "${data[@]}"
expect2 "tensor lm_head.weight: differs from model.embed_tokens.weight" train --model lbad_tied "${data[@]}"
expect2 "lbad_bias/config.json: attention_bias: expected false" train --model lbad_bias "${data[@]}"
expect2 "lbad_rope/config.json: rope_scaling.rope_type: expected llama3" train --model lbad_rope "${data[@]}"
expect2 "lbad_trunc/model.safetensors: tensor lm_head.weight: data_offsets: end" train --model lbad_trunc "${data[@]}"
expect2 "tensor model.layers.0.input_layernorm.weight: data_offsets overlap tensor model.embed_tokens.weight" train --model lbad_overlap "${data[@]}"
echo "ok: $n bad Llama inputs refused"
