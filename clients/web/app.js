// Browser captioning page for conformer-streamer (docs/protocol.md v1). No build step.
//
// "my microphone": getUserMedia -> AudioWorklet (capture-worklet.js: 16 kHz Int16 frames) -> websocket
//   v1/stream on the host that served this page. "the server's microphone": websocket v1/listen.
// URLs are relative to the page, so it also works behind a reverse proxy under a sub-path.
// Page parameters: ?token=T (server token), ?mode=listen, ?autostart=1 (start without a click).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $("status"),
    statusText: $("status-text"),
    toggle: $("toggle"),
    clear: $("clear"),
    level: $("level"),
    error: $("error"),
    captions: $("captions"),
    placeholder: $("placeholder"),
    transcript: $("transcript"),
    partial: $("partial"),
    committed: document.querySelector("#partial .committed"),
    tentative: document.querySelector("#partial .tentative"),
    model: $("model"),
    modes: document.querySelectorAll('input[name="mode"]'),
  };
  const params = new URLSearchParams(location.search);

  // Observable state (also handy for automated tests and debugging from the console).
  const state = { phase: "idle", mode: "stream", finals: [], partial: "", errors: [], streamId: null };
  window.captionState = state;

  let ws = null;
  let audio = null; // {context, source, node, stream}
  let ready = false;
  let pending = []; // audio captured before "ready"
  let endTimer = null;

  // ----------------------------------------------------------------------------------------- view

  const PHASE_TEXT = {
    idle: "Not connected",
    connecting: "Connecting…",
    running: "Listening",
    stopping: "Finishing…",
    stopped: "Stopped",
    error: "Error",
  };

  function setPhase(phase, detail) {
    state.phase = phase;
    ui.status.dataset.state = phase;
    ui.statusText.textContent = detail ? `${PHASE_TEXT[phase]} · ${detail}` : PHASE_TEXT[phase];
    const busy = phase === "connecting" || phase === "running" || phase === "stopping";
    ui.toggle.textContent = busy ? "Stop" : "Start";
    ui.toggle.dataset.running = busy ? "true" : "false"; // the label says Start/Stop; no aria-pressed on top
    ui.toggle.disabled = phase === "stopping";
    ui.modes.forEach((m) => (m.disabled = busy));
    if (!busy) ui.level.value = 0;
    ui.level.hidden = !(busy && state.mode === "stream");
  }

  function showError(message) {
    state.errors.push(message);
    ui.error.textContent = message;
    ui.error.hidden = false;
  }

  function clearError() {
    ui.error.hidden = true;
    ui.error.textContent = "";
  }

  function nearBottom() {
    const c = ui.captions;
    return c.scrollHeight - c.scrollTop - c.clientHeight < 48;
  }

  function keepScrolled(wasNearBottom) {
    if (wasNearBottom) ui.captions.scrollTop = ui.captions.scrollHeight;
  }

  function clock(seconds) {
    const s = Math.max(0, Math.floor(seconds || 0));
    const h = Math.floor(s / 3600);
    const mm = String(Math.floor((s % 3600) / 60)).padStart(2, "0");
    const ss = String(s % 60).padStart(2, "0");
    return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
  }

  function renderPartial(committed, tentative) {
    const stick = nearBottom();
    ui.committed.textContent = committed || "";
    ui.tentative.textContent = tentative || "";
    state.partial = [committed, tentative].filter(Boolean).join(" ");
    ui.partial.hidden = state.partial === "";
    if (state.partial) ui.placeholder.hidden = true;
    keepScrolled(stick);
  }

  function renderFinal(event) {
    const text = (event.text || "").trim();
    renderPartial("", "");
    if (!text) return;
    const stick = nearBottom();
    const li = document.createElement("li");
    li.className = "final";
    const time = document.createElement("time");
    const now = new Date();
    time.dateTime = now.toISOString();
    time.textContent = clock(event.start);
    time.title = `${clock(event.start)}–${clock(event.end)} into the stream; at ${now.toLocaleTimeString()}`;
    const span = document.createElement("span");
    span.className = "text";
    span.textContent = text;
    li.append(time, span);
    ui.transcript.append(li);
    ui.placeholder.hidden = true;
    state.finals.push({ text, start: event.start, end: event.end });
    keepScrolled(stick);
  }

  // ------------------------------------------------------------------------------------ protocol

  function endpoint(path) {
    const url = new URL(path, location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.search = "";
    const token = params.get("token");
    if (token) url.searchParams.set("token", token);
    return url.toString();
  }

  function onMessage(event) {
    if (typeof event.data !== "string") return;
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch {
      return;
    }
    switch (msg.type) {
      case "ready":
        ready = true;
        state.streamId = msg.stream_id;
        if (msg.model) ui.model.textContent = `model: ${msg.model}`;
        for (const buf of pending) ws.send(buf);
        pending = [];
        if (state.phase === "connecting") setPhase("running");
        break;
      case "partial":
        if (state.mode === "listen" && state.phase === "connecting") setPhase("running");
        renderPartial(msg.committed ?? msg.text ?? "", msg.tentative ?? "");
        break;
      case "final":
        if (state.mode === "listen" && state.phase === "connecting") setPhase("running");
        renderFinal(msg);
        break;
      case "error":
        showError(`Server error (${msg.code}): ${msg.message}`);
        if (msg.fatal !== false) teardown("error");
        break;
      case "end":
        teardown("stopped");
        break;
      default:
        break;
    }
  }

  function connect(path, onOpen) {
    ready = false;
    pending = [];
    const socket = new WebSocket(endpoint(path));
    socket.binaryType = "arraybuffer";
    socket.onopen = () => onOpen(socket);
    socket.onmessage = onMessage;
    socket.onerror = () => {}; // details arrive with onclose
    socket.onclose = (event) => {
      if (socket !== ws) return;
      ws = null;
      if (state.phase === "stopped" || state.phase === "idle" || state.phase === "error") return;
      if (state.phase === "stopping" && event.code === 1000) {
        teardown("stopped");
        return;
      }
      const why = event.reason ? `: ${event.reason}` : "";
      showError(
        event.code === 1006
          ? "Cannot reach the caption server (connection failed or lost)."
          : `Connection closed by the server (code ${event.code}${why}).`,
      );
      teardown("error");
    };
    ws = socket;
  }

  // --------------------------------------------------------------------------------------- audio

  async function startAudio() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error("This browser cannot capture audio here (a secure context — https or localhost — is needed).");
    }
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: true },
      video: false,
    });
    const context = new AudioContext({ latencyHint: "interactive" });
    await context.audioWorklet.addModule(new URL("static/capture-worklet.js", location.href));
    const source = context.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(context, "capture-processor", {
      numberOfInputs: 1,
      numberOfOutputs: 0,
      channelCount: 1,
      channelCountMode: "explicit",
      processorOptions: { targetRate: 16000 },
    });
    node.port.onmessage = (event) => {
      const msg = event.data;
      if (msg.type !== "audio") return;
      ui.level.value = Math.min(1, msg.level * 4);
      if (!ws || ws.readyState !== WebSocket.OPEN || state.phase === "stopped") return;
      if (ready) ws.send(msg.pcm);
      else if (pending.length < 50) pending.push(msg.pcm);
    };
    source.connect(node);
    if (context.state === "suspended") await context.resume();
    audio = { context, source, node, stream };
  }

  async function stopAudio(flush) {
    const a = audio;
    audio = null;
    if (!a) return;
    a.stream.getTracks().forEach((t) => t.stop());
    if (flush) {
      // let the worklet hand over the last, partly filled frame
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, 300);
        const previous = a.node.port.onmessage;
        a.node.port.onmessage = (event) => {
          previous(event);
          if (event.data.type === "flushed") {
            clearTimeout(timer);
            resolve();
          }
        };
        a.node.port.postMessage("flush");
      });
    }
    try {
      a.source.disconnect();
      a.node.disconnect();
      await a.context.close();
    } catch {
      /* already closed */
    }
  }

  // ------------------------------------------------------------------------------------ controls

  async function start() {
    clearError();
    state.mode = document.querySelector('input[name="mode"]:checked').value;
    setPhase("connecting");
    if (state.mode === "listen") {
      connect("v1/listen", () => setPhase("running", "server microphone"));
      return;
    }
    connect("v1/stream", (socket) => {
      socket.send(
        JSON.stringify({
          type: "start",
          version: 1,
          sample_rate: 16000,
          encoding: "pcm_s16le",
          partials: true,
          words: true,
          format: "readable", // punctuated, true-cased finals (partials stay raw)
        }),
      );
    });
    try {
      await startAudio();
    } catch (err) {
      const name = err && err.name;
      showError(
        name === "NotAllowedError"
          ? "Microphone permission was denied. Allow it in the browser's site settings and press Start again."
          : name === "NotFoundError"
            ? "No microphone was found."
            : `Cannot start the microphone: ${err && err.message ? err.message : err}`,
      );
      teardown("error");
    }
  }

  async function stop() {
    if (state.mode === "listen" || !ws) {
      teardown("stopped");
      return;
    }
    setPhase("stopping");
    await stopAudio(true);
    if (ws && ws.readyState === WebSocket.OPEN) {
      if (!ready) {
        teardown("stopped");
        return;
      }
      ws.send(JSON.stringify({ type: "end" }));
      endTimer = setTimeout(() => {
        showError("The server did not finish the stream in time.");
        teardown("error");
      }, 15000);
    } else {
      teardown("stopped");
    }
  }

  function teardown(phase) {
    clearTimeout(endTimer);
    endTimer = null;
    stopAudio(false);
    const socket = ws;
    ws = null;
    if (socket && socket.readyState <= WebSocket.OPEN) socket.close(1000);
    if (state.partial && phase !== "error") renderPartial("", "");
    setPhase(phase);
  }

  ui.toggle.addEventListener("click", () => {
    if (state.phase === "connecting" || state.phase === "running") stop();
    else if (state.phase !== "stopping") start();
  });

  ui.clear.addEventListener("click", () => {
    ui.transcript.replaceChildren();
    state.finals = [];
    renderPartial("", "");
    ui.placeholder.hidden = false;
  });

  window.addEventListener("pagehide", () => teardown("stopped"));

  if (params.get("mode") === "listen") {
    document.querySelector('input[name="mode"][value="listen"]').checked = true;
  }
  setPhase("idle");
  if (params.get("autostart") === "1") start();
})();
