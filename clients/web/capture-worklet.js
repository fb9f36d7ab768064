// AudioWorklet: microphone samples at the AudioContext's rate -> 16 kHz mono Int16 PCM in 100 ms frames.
//
// Resampling is a windowed-sinc low-pass interpolator (Blackman window, cut-off at 90 % of the lower
// Nyquist frequency), evaluated at each output instant, so 44.1/48/96 kHz inputs convert without the
// aliasing that plain decimation adds to sibilants. State carries across 128-sample render quanta.
// Messages to the main thread: {type: "audio", pcm: ArrayBuffer (Int16 LE), level: RMS 0..1}.
// Messages from it: "flush" -> send what is buffered, then {type: "flushed"}.

const TARGET_RATE = 16000;
const FRAME_SAMPLES = 1600; // 100 ms at 16 kHz
const HALF_ZEROS = 8; // sinc zero crossings on each side of the centre tap

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.targetRate = opts.targetRate || TARGET_RATE;
    this.inRate = sampleRate; // global in AudioWorkletGlobalScope
    this.step = this.inRate / this.targetRate; // input samples per output sample
    const cutoff = (0.9 * Math.min(this.inRate, this.targetRate)) / 2; // Hz
    this.fc = cutoff / this.inRate; // cycles per input sample
    this.halfWidth = HALF_ZEROS / (2 * this.fc); // kernel half-width in input samples
    this.history = new Float32Array(0); // input samples not yet fully consumed
    this.pos = 0; // position of the next output sample within `history`
    this.frame = new Int16Array(FRAME_SAMPLES);
    this.filled = 0;
    this.sumSquares = 0;
    this.port.onmessage = (event) => {
      if (event.data === "flush") {
        this.emit();
        this.port.postMessage({ type: "flushed" });
      }
    };
  }

  kernel(d) {
    // windowed sinc at distance d (input samples) from the output instant
    const w = d / this.halfWidth;
    if (w <= -1 || w >= 1) return 0;
    const x = 2 * this.fc * d;
    const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
    const blackman = 0.42 + 0.5 * Math.cos(Math.PI * w) + 0.08 * Math.cos(2 * Math.PI * w);
    return sinc * blackman;
  }

  push(sample) {
    const s = Math.max(-1, Math.min(1, sample));
    this.sumSquares += s * s;
    this.frame[this.filled++] = s < 0 ? Math.round(s * 32768) : Math.round(s * 32767);
    if (this.filled === FRAME_SAMPLES) this.emit();
  }

  emit() {
    if (this.filled === 0) return;
    const pcm = this.frame.slice(0, this.filled);
    const level = Math.sqrt(this.sumSquares / this.filled);
    this.port.postMessage({ type: "audio", pcm: pcm.buffer, level }, [pcm.buffer]);
    this.filled = 0;
    this.sumSquares = 0;
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0 || input[0].length === 0) return true;
    // down-mix to mono
    const n = input[0].length;
    const mono = new Float32Array(n);
    for (let c = 0; c < input.length; c++) {
      const ch = input[c];
      for (let i = 0; i < n; i++) mono[i] += ch[i] / input.length;
    }
    if (this.step === 1) {
      for (let i = 0; i < n; i++) this.push(mono[i]);
      return true;
    }
    const buf = new Float32Array(this.history.length + n);
    buf.set(this.history, 0);
    buf.set(mono, this.history.length);
    const hw = this.halfWidth;
    // produce every output sample whose kernel lies fully inside the buffer
    while (this.pos + hw < buf.length) {
      const lo = Math.max(0, Math.ceil(this.pos - hw));
      const hi = Math.floor(this.pos + hw);
      let acc = 0;
      let norm = 0;
      for (let i = lo; i <= hi; i++) {
        const k = this.kernel(i - this.pos);
        acc += buf[i] * k;
        norm += k;
      }
      this.push(norm > 0 ? acc / norm : 0);
      this.pos += this.step;
    }
    // keep what the next kernels still need
    const keepFrom = Math.max(0, Math.floor(this.pos - hw) - 1);
    this.history = buf.slice(keepFrom);
    this.pos -= keepFrom;
    return true;
  }
}

registerProcessor("capture-processor", CaptureProcessor);
