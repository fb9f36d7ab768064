"""Grammar decoding (``streamer/grammar.py``): agreement with exact CTC scoring, accuracy, speed.

Single-phrase utterances: synthesized by the held-out voices (flite ``rms``, festival
``cmu_us_slt_arctic_hts`` when installed) from two phrase pools (the numbers 0-999 spelled out, and 1000
dictionary words), and every recording of ``../shared/eval/real`` (its transcript is the phrase). Each
utterance gets lists of 10, 100 and 1000 phrases: the truth plus distractors drawn from its pool (seeded).

For every utterance and list:

* **agreement**: the streaming decoder's pick (the engine streams the audio in 0.2 s chunks under that
  list's grammar, which decides where its utterances end; the Finals are decoded by the grammar from the
  utterance frames the stream kept, garbage path off) equals the phrase with the highest exact CTC
  log-likelihood over the whole recording's offline frames (``torch.nn.functional.ctc_loss`` of every
  phrase of the list, special tokens folded into blank); "agree str": the same over every frame the stream
  computed (the decoder's own agreement, without the streamed-vs-offline acoustic difference);
* **accuracy** against the truth, of the streaming decoder with the garbage path on (``[unk]`` counts
  as wrong) and of the exact scoring;
* **speed**: CPU time of the search per second of audio (1000 phrases), beside exact per-phrase scoring
  with ``ctc_loss`` in the same run (the reference), and the fraction of the 5 ms/s budget.

    PYTHONPATH=. python bench/bench_grammar.py --per-pool 20

``--tune-garbage`` instead measures the out-of-grammar path on *training* voices (never the held-out
voices or the real recordings): per candidate ``GARBAGE_PENALTY``, how many in-grammar utterances stay
accepted and how many out-of-grammar ones (the same utterance against its 100-phrase list without the
spoken phrase: the hard case, near misses of the same pool) give ``[unk]``, and how many give a wrong
phrase with a confidence above 0.5.

    PYTHONPATH=. python bench/bench_grammar.py --tune-garbage --voices flite:kal16,flite:awb --per-pool 15
    PYTHONPATH=. python bench/bench_grammar.py --tune-garbage --voices train-real --per-pool 40

(``train-real``: real recordings of ``../shared/train/real``, training material, never evaluation: the
40 AN4 commands and spellings plus as many Kathleen sentences, against lists of the set's transcripts.)
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model.audio import load_audio
from model.training.text import WORDLIST, number_words
from streamer.config import Settings
from streamer.ctc_merge import UtteranceBuilder
from streamer.engine import RecognitionEngine
from streamer.grammar import UNK, Grammar, GrammarSearch, phrase_labels

REAL = Path(__file__).resolve().parents[2] / "shared" / "eval" / "real"
TRAIN_REAL = Path(__file__).resolve().parents[2] / "shared" / "train" / "real"
SIZES = (10, 100, 1000)
BUDGET_MS_PER_S = 5.0


@dataclass
class Utterance:
    id: str
    truth: str
    audio: np.ndarray
    pool: list[str]


def number_pool() -> list[str]:
    return [number_words(i).upper() for i in range(1000)]


def word_pool(seed: int = 0) -> list[str]:
    words = sorted(
        {
            w.strip().upper()
            for w in WORDLIST.read_text(encoding="utf-8").splitlines()
            if w.strip().isascii()
            and w.strip().isalpha()
            and w.strip().islower()
            and 3 <= len(w.strip()) <= 10
        }
    )
    return random.Random(seed).sample(words, 1000)


def synthesize(voice: str, text: str, tmp: Path) -> np.ndarray | None:
    engine, name = voice.split(":")
    out = tmp / "utt.wav"
    if engine == "flite" and shutil.which("flite"):
        cmd = ["flite", "-voice", name, "-t", text.lower(), "-o", str(out)]
    elif engine == "festival" and shutil.which("text2wave"):
        (tmp / "utt.txt").write_text(text.lower())
        cmd = ["text2wave", "-eval", f"(voice_{name})", str(tmp / "utt.txt"), "-o", str(out)]
    else:
        return None
    if subprocess.run(cmd, capture_output=True, timeout=120).returncode != 0:
        return None
    return load_audio(out, 16000)


def synthetic(voices: list[str], per_pool: int, seed: int) -> list[Utterance]:
    out = []
    pools = {"numbers": number_pool(), "words": word_pool(seed)}
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        for voice in voices:
            for name, pool in pools.items():
                for k, phrase in enumerate(rng.sample(pool, per_pool)):
                    audio = synthesize(voice, phrase, Path(tmp))
                    if audio is None:
                        print(f"# {voice}: not installed, skipped", file=sys.stderr)
                        break
                    out.append(Utterance(f"{voice}/{name}/{k}", phrase, audio, pool))
    return out


def real(directory: Path) -> list[Utterance]:
    if not (directory / "transcripts.tsv").is_file():
        print(f"# {directory}: missing, real clips skipped", file=sys.stderr)
        return []
    with open(directory / "transcripts.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    transcripts = [r["transcript"] for r in rows]
    pool = transcripts + number_pool()  # distractors: the other clips' transcripts first, then numbers
    return [
        Utterance(f"real/{r['id']}", r["transcript"], load_audio(directory / r["path"], 16000), pool)
        for r in rows
    ]


def train_real(directory: Path, per_corpus: int, seed: int) -> list[Utterance]:
    """Real training recordings (AN4 and Kathleen), for tuning only; the pool is all their transcripts."""
    from model.training.text import normalize

    with open(directory / "transcripts.tsv", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["corpus"] in ("an4", "kathleen")]
    for r in rows:
        r["text"] = normalize(r["transcript"])
    pool = list(dict.fromkeys(r["text"] for r in rows if r["text"]))
    rng = random.Random(seed)
    chosen = []
    for corpus in ("an4", "kathleen"):
        mine = [r for r in rows if r["corpus"] == corpus and r["text"]]
        chosen += rng.sample(mine, min(per_corpus, len(mine)))
    return [
        Utterance(f"train-real/{r['path']}", r["text"], load_audio(directory / r["path"], 16000), pool)
        for r in chosen
    ]


def phrase_list(utt: Utterance, size: int, seed: int) -> list[str]:
    others = [p for p in dict.fromkeys(utt.pool) if p != utt.truth]
    rng = random.Random(f"{seed}/{utt.id}/{size}")
    if utt.id.startswith("real/"):  # the other real transcripts always compete, numbers fill up
        head = others[: len(others) - 1000]
        rng.shuffle(head)
        chosen = (head + rng.sample(others[len(head) :], max(0, size - 1 - len(head))))[: size - 1]
    else:
        chosen = rng.sample(others, size - 1)
    phrases = [utt.truth, *chosen]
    rng.shuffle(phrases)
    return phrases


def exact_scores(log_probs: np.ndarray, phrases: list[str], grammar: Grammar) -> np.ndarray:
    """(phrases,) CTC log-likelihood of each phrase by torch's ctc_loss (specials folded into blank)."""
    vocab = grammar.vocab
    lp = torch.from_numpy(np.asarray(log_probs, dtype=np.float64))
    specials = [int(i) for i in grammar.special_ids]
    if specials:
        lp = lp.clone()
        lp[:, vocab.blank_id] = torch.logsumexp(lp[:, [vocab.blank_id, *specials]], dim=1)
        lp[:, specials] = -1e30
    targets = [torch.tensor(phrase_labels(p, vocab)) for p in phrases]
    n = len(phrases)
    loss = torch.nn.functional.ctc_loss(
        lp[:, None, :].expand(-1, n, -1),
        torch.cat(targets),
        torch.full((n,), len(lp), dtype=torch.long),
        torch.tensor([len(t) for t in targets]),
        blank=vocab.blank_id,
        reduction="none",
        zero_infinity=False,
    )
    return -loss.numpy()


PENALTIES = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6)


def tune_garbage(engine: RecognitionEngine, utterances: list[Utterance], seed: int) -> None:
    """In-grammar vs out-of-grammar acceptance for each candidate penalty (offline frames)."""
    rows = []  # (in_grammar, truth, [(text, confidence) per penalty])
    for utt in utterances:
        lp = engine.offline_log_probs(utt.audio)
        listed = phrase_list(utt, 100, seed)
        left_out = [p for p in listed if p != utt.truth]  # same list without the truth: out of grammar
        for in_grammar, phrases in ((True, listed), (False, left_out)):
            search: GrammarSearch = Grammar(phrases, engine.vocab, garbage_penalty=None).search()
            search.advance(lp)
            scores = search.scores()
            results = []
            for penalty in PENALTIES:
                garbage = search.greedy_log_prob - penalty * search.speech_frames
                everything = np.append(scores, garbage)
                best = int(np.argmax(everything))
                post = np.exp(everything - everything.max())
                post /= post.sum()
                text = search.grammar.phrases[best] if best < len(scores) else UNK
                results.append((text, float(post[best])))
            rows.append((in_grammar, utt.truth, results))
    print(
        f"\n{'penalty':>8} {'in: correct':>12} {'in: [unk]':>10} {'out: [unk]':>11} {'out: wrong >0.5':>16}"
    )
    for k, penalty in enumerate(PENALTIES):
        inside = [r for r in rows if r[0]]
        outside = [r for r in rows if not r[0]]
        print(
            f"{penalty:8.2f} {sum(r[2][k][0] == r[1] for r in inside) / len(inside):12.1%}"
            f" {sum(r[2][k][0] == UNK for r in inside) / len(inside):10.1%}"
            f" {sum(r[2][k][0] == UNK for r in outside) / len(outside):11.1%}"
            f" {sum(r[2][k][0] != UNK and r[2][k][1] > 0.5 for r in outside) / len(outside):16.1%}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--voices", default="flite:rms,festival:cmu_us_slt_arctic_hts")
    parser.add_argument("--per-pool", type=int, default=20, help="utterances per voice and phrase pool")
    parser.add_argument("--real", type=Path, default=REAL)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--tune-garbage", action="store_true", help="the out-of-grammar penalty sweep")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every disagreement")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = [int(s) for s in args.sizes.split(",")]

    settings = Settings()
    settings.decoder.method = "greedy"  # finals of grammar streams never use the LM search
    engine = RecognitionEngine(settings)
    if args.tune_garbage:
        voices = args.voices.split(",")
        if any(v in ("flite:rms", "festival:cmu_us_slt_arctic_hts") for v in voices):
            parser.error("--tune-garbage tunes on training voices only")
        tuning = (
            train_real(TRAIN_REAL, args.per_pool, args.seed)
            if voices == ["train-real"]
            else synthetic(voices, args.per_pool, args.seed + 1)
        )
        tune_garbage(engine, tuning, args.seed)
        return 0
    utterances = synthetic(args.voices.split(","), args.per_pool, args.seed) + real(args.real)
    print(f"{len(utterances)} utterances, {sum(len(u.audio) for u in utterances) / 16000:.0f} s of audio")

    kept: list = []  # the Finals' input: each utterance's kept frames
    streamed: list[np.ndarray] = []  # every frame the stream merged (gated windows as blank frames)
    original_decode, original_save = engine.finals.decode, UtteranceBuilder.save

    def capture(stream_id, utterance, *args, **kwargs):
        kept.append(utterance)
        return original_decode(stream_id, utterance, *args, **kwargs)

    def record(builder, log_probs, first_frame, count):  # every merged window's owned frames
        if log_probs is None:
            blanks = np.full((count, len(engine.vocab.raw_tokens)), -1e4, dtype=np.float32)
            blanks[:, engine.vocab.blank_id] = 0.0
            streamed.append(blanks)
        else:
            streamed.append(np.asarray(log_probs, dtype=np.float32))
        return original_save(builder, log_probs, first_frame, count)

    engine.finals.decode = capture
    UtteranceBuilder.save = record

    # (group, size, agree, agree on the streamed frames, correct_stream, correct_exact, unk, utterances)
    rows = []
    search_s = {s: 0.0 for s in sizes}
    exact_s = {s: 0.0 for s in sizes}
    audio_s = 0.0
    searched_s = {s: 0.0 for s in sizes}  # seconds of frames the grammar searched (the kept utterances)
    for n, utt in enumerate(utterances):
        offline = engine.offline_log_probs(utt.audio)
        audio_s += len(utt.audio) / 16000
        group = utt.id.split("/")[0] if utt.id.startswith("real/") else utt.id.rsplit("/", 1)[0]
        for size in sizes:
            phrases = phrase_list(utt, size, args.seed)
            # the stream runs under this very grammar: it decides where the stream's utterances end
            kept.clear()
            streamed.clear()
            engine.transcribe_stream(utt.audio, 3200, decoding=engine.decoding_options(grammar=phrases))
            utterances_frames = [u for u in kept if u.log_probs is not None and len(u.log_probs)]
            searched_s[size] += (
                sum(len(u.log_probs) for u in utterances_frames) * engine.geometry.stride / 16000
            )
            grammar = Grammar(phrases, engine.vocab)
            plain = Grammar(phrases, engine.vocab, garbage_penalty=None)
            t0 = time.process_time()
            picks = [plain.decode(u.log_probs).text for u in utterances_frames]
            with_garbage = [grammar.decode(u.log_probs).text for u in utterances_frames]
            search_s[size] += time.process_time() - t0
            t0 = time.process_time()
            scores = exact_scores(offline, grammar.phrases, grammar)
            exact_s[size] += time.process_time() - t0
            exact = grammar.phrases[int(np.argmax(scores))]
            frames = np.concatenate(streamed) if streamed else offline[:0]
            exact_streamed = grammar.phrases[int(np.argmax(exact_scores(frames, grammar.phrases, grammar)))]
            stream_pick = " ".join(picks)
            if stream_pick != exact and args.verbose:
                print(
                    f"# {utt.id} list {size}: stream {stream_pick!r} ({len(picks)} utterances), exact {exact!r}"
                    f" (on the streamed frames {exact_streamed!r})",
                    file=sys.stderr,
                )
            stream_text = " ".join(t for t in with_garbage)
            rows.append(
                (
                    group,
                    size,
                    stream_pick == exact,
                    stream_pick == exact_streamed,
                    stream_text == utt.truth,
                    exact == utt.truth,
                    UNK in with_garbage,
                    len(picks),
                )
            )
        if (n + 1) % 20 == 0:
            print(f"# {n + 1}/{len(utterances)}", file=sys.stderr, flush=True)

    print(
        f"\n{'group':28} {'list':>5} {'n':>4} {'agree':>7} {'agree str':>10} {'acc stream':>11}"
        f" {'acc exact':>10} {'[unk]':>6} {'split':>6}"
    )
    groups = sorted({r[0] for r in rows})
    for size in sizes:
        for group in [*groups, "all"]:
            sel = [r for r in rows if r[1] == size and (group == "all" or r[0] == group)]
            if not sel:
                continue
            m = len(sel)
            print(
                f"{group:28} {size:5d} {m:4d} {sum(r[2] for r in sel) / m:7.1%} {sum(r[3] for r in sel) / m:10.1%}"
                f" {sum(r[4] for r in sel) / m:11.1%} {sum(r[5] for r in sel) / m:10.1%}"
                f" {sum(r[6] for r in sel):6d} {sum(r[7] > 1 for r in sel):6d}"
            )
    print("\nspeed (CPU, one thread): search of both grammars (garbage on and off) per second of audio")
    for size in sizes:
        ours = search_s[size] / 2 / searched_s[size] * 1000
        ref = exact_s[size] / audio_s * 1000
        print(
            f"  {size:5d} phrases: {ours:6.2f} ms/s  (exact ctc_loss scoring {ref:7.2f} ms/s, ratio {ref / ours:5.1f}x;"
            f" {ours / BUDGET_MS_PER_S:.0%} of the {BUDGET_MS_PER_S:g} ms/s budget, {ours / 1000:.2%} of a core)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
