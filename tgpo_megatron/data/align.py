"""One token-id space for a teacher and a student of one tokenizer family.

TGPO hands the teacher's argmax *ids* to the student, so an id must mean the same text to both models. Models
of one family (Qwen2.5-Math and Qwen3, say) share the base vocabulary and differ in added tokens, in the
special tokens they end on and in how far their embedding matrices are padded. This module
- compares the base vocabularies (and BPE merges) and refuses, with an explanation, when they differ;
- leaves each model its own tokenizer, as the authors' alignment does: the student's tokenizer is not changed,
  so a prompt tokenises exactly as before (a teacher-only ``<think>`` added to it would turn the ``<think>\n``
  every prompt ends with into one untrained embedding row). Ids only the teacher's tokenizer has (Qwen3's
  ``<think>``/``</think>``, tool tokens) are recorded in ``align_report.json``: the student can emit them (the
  teacher's argmax teaches them) and :class:`~tgpo_megatron.data.tokenizer.ResponseDecoder` decodes them as the
  teacher's text, so the reward still sees a ``</think>`` (docs/method.md §7);
- refuses, naming every one, ids whose added tokens mean different text to the two models (R1-Distill-Qwen's
  ``<｜User｜>``, ``</think>``... where Qwen2.5 has its ChatML and box tokens): the teacher's argmax at such an
  id would teach the student another token. ``--allow-id-collisions`` accepts them (the student's token is
  kept), records them in ``align_report.json``, and a run must opt in again (``teacher.allow_id_collisions``);
- unifies EOS/PAD/BOS to the student's ids (the teacher's tokenizer names its own token at each of those ids);
- pads both models' embedding and output matrices to one vocabulary size (new rows: the mean of the existing
  rows, as transformers' resize does), and writes both aligned copies.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field

from tgpo_megatron.errors import UserError

log = logging.getLogger(__name__)

EMBEDDING_NAMES = ("model.embed_tokens.weight", "lm_head.weight")
MAX_EXAMPLES = 5


class TokenizerMismatchError(UserError):
    """The two tokenizers are not of one family; sharing ids between them would be meaningless."""


@dataclass
class Alignment:
    vocab_size: int
    teacher_only: dict[int, str] = field(default_factory=dict)
    """Added tokens at ids the student's tokenizer does not have: the teacher's text the student decodes them as."""
    differing: list[str] = field(default_factory=list)
    """Every token whose id or text differs between the two (human-readable lines)."""
    special_ids: dict[str, int] = field(default_factory=dict)
    collisions: list[tuple[int, str, str]] = field(default_factory=list)
    """``(id, student's text, teacher's text)`` of every id the two models' added tokens disagree on."""


REPORT = "align_report.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
)
COLLISION_HINT = (
    "the teacher's argmax at such an id would teach the student a different token; to accept this "
    "(the student reads its own token there; the authors' teacher-ladder runs did), align with "
    "--allow-id-collisions and set teacher.allow_id_collisions: true in the recipe"
)


def describe_collisions(collisions) -> str:
    return "; ".join(f"id {i}: {s!r} (student) vs {t!r} (teacher)" for i, s, t in collisions)


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise UserError(
            f"{path} not found (align_tokenizer needs a fast tokenizer's tokenizer.json and the model's config.json)"
        )
    with open(path) as f:
        return json.load(f)


def _base_vocab(tokenizer_json: dict) -> tuple[str, dict[int, str]]:
    model = tokenizer_json["model"]
    kind = model.get("type") or ("BPE" if "merges" in model else "Unigram")
    vocab = model["vocab"]
    if isinstance(vocab, dict):
        return kind, {i: t for t, i in vocab.items()}
    return kind, {i: piece[0] for i, piece in enumerate(vocab)}  # Unigram: [[piece, score], ...]


def _added(tokenizer_json: dict) -> dict[int, str]:
    return {t["id"]: t["content"] for t in tokenizer_json.get("added_tokens", [])}


def _merges(tokenizer_json: dict) -> list:
    return [m if isinstance(m, str) else " ".join(m) for m in tokenizer_json["model"].get("merges", [])]


def check_family(student: dict, teacher: dict) -> None:
    """Raise :class:`TokenizerMismatchError` unless the two base vocabularies agree on every shared id."""
    s_kind, s_vocab = _base_vocab(student)
    t_kind, t_vocab = _base_vocab(teacher)
    why = (
        "TGPO passes the teacher's argmax token ids to the student, so both must share one vocabulary; "
        "use a teacher from the student's tokenizer family (e.g. Qwen2.5/Qwen3 with a Qwen2.5 student)"
    )
    if s_kind != t_kind:
        raise TokenizerMismatchError(
            f"different tokenizer types: the student's is {s_kind}, the teacher's {t_kind}. {why}"
        )
    shared = sorted(set(s_vocab) & set(t_vocab))
    different = [i for i in shared if s_vocab[i] != t_vocab[i]]
    if different:
        examples = ", ".join(f"id {i}: {s_vocab[i]!r} vs {t_vocab[i]!r}" for i in different[:MAX_EXAMPLES])
        raise TokenizerMismatchError(
            f"the base vocabularies differ: {len(different)} of {len(shared)} shared ids are different tokens "
            f"(student vs teacher: {examples}). {why}"
        )
    if _merges(student)[: len(_merges(teacher))] != _merges(teacher)[: len(_merges(student))]:
        raise TokenizerMismatchError(f"the BPE merge rules differ, so one text splits into different ids. {why}")


def plan_alignment(
    student_tok: dict, teacher_tok: dict, student_cfg: dict, teacher_cfg: dict, allow_id_collisions: bool = False
) -> Alignment:
    check_family(student_tok, teacher_tok)
    s_base, t_base = _base_vocab(student_tok)[1], _base_vocab(teacher_tok)[1]
    s_added, t_added = _added(student_tok), _added(teacher_tok)
    s_all, t_all = {**s_base, **s_added}, {**t_base, **t_added}
    s_ids = {t: i for i, t in s_all.items()}
    alignment = Alignment(vocab_size=0)
    for i, text in sorted(t_added.items()):
        if s_all.get(i) == text:
            continue
        if i not in s_all and text not in s_ids:
            alignment.teacher_only[i] = text
            alignment.differing.append(f"id {i}: {text!r} only in the teacher; the student decodes it as this text")
        elif i in s_all:
            alignment.collisions.append((i, s_all[i], text))
            alignment.differing.append(f"id {i}: {s_all[i]!r} (student) vs {text!r} (teacher); the student's kept")
        else:
            alignment.differing.append(
                f"{text!r}: id {s_ids[text]} (student) vs {i} (teacher); the student's id "
                "kept, the teacher never sees its own id for it"
            )
    for i, text in sorted(s_added.items()):
        if i not in t_all:
            alignment.differing.append(f"id {i}: {text!r} only in the student")
        elif i not in t_added and t_all[i] != text:
            alignment.collisions.append((i, text, t_all[i]))
    alignment.collisions.sort()
    if alignment.collisions and not allow_id_collisions:
        raise TokenizerMismatchError(
            f"{len(alignment.collisions)} ids mean different text to the two models: "
            f"{describe_collisions(alignment.collisions)}. {COLLISION_HINT}"
        )
    size = max(max(s_all) + 1, max(t_all) + 1)
    alignment.vocab_size = max(size, int(student_cfg["vocab_size"]), int(teacher_cfg["vocab_size"]))
    alignment.special_ids = {
        k: student_cfg[k] for k in ("eos_token_id", "pad_token_id", "bos_token_id") if student_cfg.get(k) is not None
    }
    return alignment


def _pad_rows(tensor, rows: int):
    import torch

    if tensor.shape[0] >= rows:
        return tensor
    mean = tensor.float().mean(dim=0, keepdim=True).to(tensor.dtype)
    return torch.cat([tensor, mean.expand(rows - tensor.shape[0], -1)], dim=0)


def _write_weights(src: str, dst: str, rows: int) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    files = sorted(f for f in os.listdir(src) if f.endswith(".safetensors"))
    if not files:
        raise UserError(f"{src}: no .safetensors weights")
    for name in files:
        with safe_open(os.path.join(src, name), framework="pt") as f:
            keys = list(f.keys())
            if not any(k in EMBEDDING_NAMES for k in keys):
                shutil.copy(os.path.join(src, name), os.path.join(dst, name))
                continue
            tensors = {k: (_pad_rows(f.get_tensor(k), rows) if k in EMBEDDING_NAMES else f.get_tensor(k)) for k in keys}
            metadata = f.metadata()
        save_file(tensors, os.path.join(dst, name), metadata=metadata or {"format": "pt"})
    if os.path.isfile(os.path.join(src, "model.safetensors.index.json")):
        shutil.copy(os.path.join(src, "model.safetensors.index.json"), dst)


def _token_text(tokenizer_json: dict, token_id: int) -> str:
    return {**_base_vocab(tokenizer_json)[1], **_added(tokenizer_json)}[token_id]


def write_aligned(model_dir: str, out_dir: str, alignment: Alignment, name_special_tokens: bool) -> None:
    """An aligned copy of ``model_dir``: the shared vocab size and special ids, padded embeddings, and its own
    tokenizer, whose EOS/PAD/BOS are renamed to its tokens at the special ids if ``name_special_tokens``."""
    os.makedirs(out_dir, exist_ok=True)
    _write_weights(model_dir, out_dir, alignment.vocab_size)
    config = _read_json(os.path.join(model_dir, "config.json"))
    config.update(vocab_size=alignment.vocab_size, **alignment.special_ids)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    gen_path = os.path.join(model_dir, "generation_config.json")
    generation = _read_json(gen_path) if os.path.isfile(gen_path) else {}
    generation.update(alignment.special_ids)
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump(generation, f, indent=2)
    for name in TOKENIZER_FILES:
        path = os.path.join(model_dir, name)
        if not os.path.isfile(path):
            continue
        if name_special_tokens and name in ("tokenizer_config.json", "special_tokens_map.json"):
            tokenizer_json = _read_json(os.path.join(model_dir, "tokenizer.json"))
            settings = _read_json(path)
            for key, token_id in alignment.special_ids.items():  # eos_token_id -> eos_token: its text at that id
                settings[key.removesuffix("_id")] = _token_text(tokenizer_json, token_id)
            with open(os.path.join(out_dir, name), "w") as f:
                json.dump(settings, f, indent=2, ensure_ascii=False)
        else:
            shutil.copy(path, os.path.join(out_dir, name))


def align(
    student: str, teacher: str, out_student: str, out_teacher: str, allow_id_collisions: bool = False
) -> Alignment:
    """Check and write the aligned copies, each with its own tokenizer and ``align_report.json``."""
    student_tok = _read_json(os.path.join(student, "tokenizer.json"))
    teacher_tok = _read_json(os.path.join(teacher, "tokenizer.json"))
    alignment = plan_alignment(
        student_tok,
        teacher_tok,
        _read_json(os.path.join(student, "config.json")),
        _read_json(os.path.join(teacher, "config.json")),
        allow_id_collisions,
    )
    for src, out, is_teacher in ((student, out_student, False), (teacher, out_teacher, True)):
        write_aligned(src, out, alignment, name_special_tokens=is_teacher)
        with open(os.path.join(out, REPORT), "w") as f:
            json.dump(
                {
                    "vocab_size": alignment.vocab_size,
                    "special_ids": alignment.special_ids,
                    "teacher_only_tokens": {str(i): t for i, t in sorted(alignment.teacher_only.items())},
                    "differing_tokens": alignment.differing,
                    "id_collisions": [{"id": i, "student": s, "teacher": t} for i, s, t in alignment.collisions],
                },
                f,
                indent=1,
                ensure_ascii=False,
            )
    return alignment


def teacher_only_tokens(model_dir: str) -> dict[int, str]:
    """The teacher-only ids an aligned model's ``align_report.json`` records, with their text (none for a model
    that was not aligned)."""
    path = os.path.join(model_dir, REPORT)
    if not os.path.isfile(path):
        return {}
    return {int(i): text for i, text in _read_json(path).get("teacher_only_tokens", {}).items()}


def check_id_collisions(teacher_dir: str, allowed: bool) -> list[tuple[int, str, str]]:
    """The id collisions ``align_tokenizer`` accepted for this teacher (its ``align_report.json``); an error
    naming them unless the run opts in, a warning when it does."""
    path = os.path.join(teacher_dir, REPORT)
    if not os.path.isfile(path):
        return []
    collisions = [(c["id"], c["student"], c["teacher"]) for c in _read_json(path).get("id_collisions", [])]
    if collisions and not allowed:
        raise TokenizerMismatchError(
            f"{teacher_dir} was aligned accepting {len(collisions)} ids that mean "
            f"different text to the two models: {describe_collisions(collisions)}. "
            f"{COLLISION_HINT}"
        )
    if collisions:
        log.warning(
            "teacher.allow_id_collisions: %d ids mean different text to the teacher and the student: %s",
            len(collisions),
            describe_collisions(collisions),
        )
    return collisions


def main(argv=None) -> int:
    import argparse

    from tgpo_megatron.errors import exit_on_user_error

    p = argparse.ArgumentParser(
        prog="align_tokenizer.py",
        description=__doc__.split("\n\n")[0],
        epilog="""
example:
  python tools/align_tokenizer.py --student /models/Qwen2.5-Math-7B --teacher /models/Qwen3-8B \\
      --out-student /models/Qwen2.5-Math-7B-aligned --out-teacher /models/Qwen3-8B-aligned
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--student", required=True, help="student HF directory (tokenizer.json, config.json, weights)")
    p.add_argument("--teacher", required=True, help="teacher HF directory")
    p.add_argument("--out-student", required=True)
    p.add_argument("--out-teacher", required=True)
    p.add_argument(
        "--allow-id-collisions",
        action="store_true",
        help="accept ids whose added tokens mean different text to the two models (listed; the "
        "student's token is kept); the recipe must then set teacher.allow_id_collisions",
    )
    args = p.parse_args(argv)

    @exit_on_user_error
    def run() -> int:
        alignment = align(args.student, args.teacher, args.out_student, args.out_teacher, args.allow_id_collisions)
        print(f"aligned: one id space of {alignment.vocab_size} ids; special ids {alignment.special_ids}")
        for line in alignment.differing:
            print(f"  differing token: {line}")
        print(f"wrote {args.out_student} and {args.out_teacher}")
        return 0

    return run()
