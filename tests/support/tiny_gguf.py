"""Writes a tiny Llama-architecture GGUF file with random weights, so tests can run a real
engine (llama.cpp's server) with no model downloaded.

    python tests/support/tiny_gguf.py OUT.gguf [--seed N]

The model: hidden 512, 8 layers, feed-forward 1536, 8 heads, context 2048, float32 weights (a CPU build without F16C converts float16 slowly);
a 512-token SentencePiece-style ("llama") vocabulary of <unk>, <s>, </s>, the 256 byte tokens
and plain tokens, among them the words inferlat builds its prompts of (each one token).
Its output is random text; what matters to the tests is the time each token takes.
"""

import argparse

import numpy as np
import gguf

HIDDEN = 512
LAYERS = 8
FFN = 1536
HEADS = 8
CONTEXT = 2048
VOCAB = 512

# inferlat's prompt words (src/compute/openai/mod.rs, WORDS): one token each.
WORDS = ["the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "on",
         "with", "be", "at", "by"]


def vocabulary():
    tokens, scores, types = [], [], []

    def add(piece, score, kind):
        tokens.append(piece.encode("utf-8") if isinstance(piece, str) else piece)
        scores.append(float(score))
        types.append(kind)

    T = gguf.TokenType
    add("<unk>", 0.0, T.UNKNOWN)
    add("<s>", 0.0, T.CONTROL)
    add("</s>", 0.0, T.CONTROL)
    for b in range(256):
        add(f"<0x{b:02X}>", 0.0, T.BYTE)
    seen = set()
    pieces = []

    def piece(p):
        if p not in seen:
            seen.add(p)
            pieces.append(p)

    # Every prefix of "▁word" is a piece, so the SentencePiece merges reach the whole word.
    piece("\u2581")
    for c in "abcdefghijklmnopqrstuvwxyz":
        piece(c)
    for w in WORDS:
        for i in range(1, len(w) + 1):
            piece("\u2581" + w[:i])
    for a in "etaoinshrdlucmfwypvbgkjqxz":
        for c in "etaoinshrdlu":
            if len(pieces) + 259 >= VOCAB:
                break
            piece(a + c)
    for p in pieces[: VOCAB - len(tokens)]:
        # Longer pieces win merges.
        add(p, float(len(p)), T.NORMAL)
    assert len(tokens) == VOCAB, len(tokens)
    return tokens, scores, types


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)

    w = gguf.GGUFWriter(args.out, "llama")
    w.add_name("inferlat-tiny-random")
    w.add_context_length(CONTEXT)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(HEADS)
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    tokens, scores, types = vocabulary()
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)

    def mat(rows, cols):
        # numpy (rows, cols) is ggml's {cols, rows}: llama.cpp's {n_in, n_out}.
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float32)

    def norm():
        return np.ones(HIDDEN, dtype=np.float32)

    w.add_tensor("token_embd.weight", mat(VOCAB, HIDDEN))
    for i in range(LAYERS):
        b = f"blk.{i}."
        w.add_tensor(b + "attn_norm.weight", norm())
        w.add_tensor(b + "attn_q.weight", mat(HIDDEN, HIDDEN))
        w.add_tensor(b + "attn_k.weight", mat(HIDDEN, HIDDEN))
        w.add_tensor(b + "attn_v.weight", mat(HIDDEN, HIDDEN))
        w.add_tensor(b + "attn_output.weight", mat(HIDDEN, HIDDEN))
        w.add_tensor(b + "ffn_norm.weight", norm())
        w.add_tensor(b + "ffn_gate.weight", mat(FFN, HIDDEN))
        w.add_tensor(b + "ffn_up.weight", mat(FFN, HIDDEN))
        w.add_tensor(b + "ffn_down.weight", mat(HIDDEN, FFN))
    w.add_tensor("output_norm.weight", norm())
    w.add_tensor("output.weight", mat(VOCAB, HIDDEN))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
