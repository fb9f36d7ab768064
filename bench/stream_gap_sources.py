"""Where does a streamed-vs-offline WER gap come from: the streamed frames, or decoding per utterance?

Streams one synthesized clip (as ``bench/stream_wer_vs_truth.py``: default layout, 0.1 s packets), keeps
the frames every streamed Final was decoded from, and decodes with the engine's own finals decoder:

* offline: the whole recording's offline frames, one search (``RecognitionEngine.transcribe``);
* streamed: the Finals as they came;
* offline frames cut at the streamed utterances' spans, one search per utterance: what decoding per
  utterance costs by itself;
* the model over each utterance's own audio (a second pass), one search per utterance.

    .venv/bin/python bench/stream_gap_sources.py [--clip slt:0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

SECONDS = {"rms": 80.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clip", default="slt:0", help="VOICE:SEED, one flite voice")
    args = parser.parse_args(argv)

    import jiwer
    from bench_streaming import synthesize_speech

    from streamer.config import Settings
    from streamer.ctc_merge import Utterance
    from streamer.engine import RecognitionEngine
    from streamer.grammar import DecodingOptions

    engine = RecognitionEngine(Settings())
    voice, seed = args.clip.split(":")
    audio, truth = synthesize_speech(SECONDS.get(voice, 60.0), seed=int(seed), voices=[voice])

    kept: list[Utterance] = []
    decode = engine.finals.decode

    def capture(stream_id, utterance, *rest, **kwargs):
        kept.append(utterance)
        return decode(stream_id, utterance, *rest, **kwargs)

    engine.finals.decode = capture
    finals = engine.transcribe_stream(audio, 1600)
    engine.finals.decode = decode

    frame_s = engine.geometry.stride / 16000
    offline_frames = engine.offline_log_probs(audio)

    def per_utterance(frames_of) -> str:
        texts = []
        for u in kept:
            first = round(u.log_probs_start / frame_s)
            frames = frames_of(first, first + len(u.log_probs))
            piece = Utterance("", (), 0.0, 0.0, log_probs=frames, log_probs_start=first * frame_s)
            texts.append(decode("bench", piece, DecodingOptions()).text)
        return " ".join(t for t in texts if t)

    def second_pass(first: int, end: int):
        stride = engine.geometry.stride
        return engine.log_probs(audio[first * stride : end * stride + stride])[: end - first]

    rows = {
        "offline (whole recording, one search)": engine.transcribe(audio).text,
        "streamed finals": " ".join(f.text for f in finals if f.text),
        "offline frames, one search per streamed utterance": per_utterance(lambda a, b: offline_frames[a:b]),
        "model over each utterance's audio, one search each": per_utterance(second_pass),
    }
    print(f"{args.clip}: {len(truth.split())} words, {len(kept)} streamed utterances")
    for name, text in rows.items():
        print(f"  {name:52} WER {jiwer.wer(truth, text):6.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
