// Chat UI: streams /api/chat (SSE over fetch), renders citation chips and the cited spans.
// All user and article text goes through textContent, never innerHTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { history: [], busy: false, uploading: false, docs: new Map(), key: sessionStorage.getItem("rag-api-key") || "" };
// The server refuses bodies over 64 KiB by default (RAG_MAX_BODY_BYTES): history is trimmed well under that.
const MAX_BODY_BYTES = 48 * 1024;
const MAX_TURN_CHARS = 4000;
const NO_MATCH_REASON = "no articles match the filters";  // rag.answer.answering.NO_MATCH_REASON

// fetch with the API key, when the server wants one: a 401 shows the key form, and the request is
// sent again once a key is entered.
async function api(path, options = {}) {
  for (;;) {
    const headers = { ...(options.headers || {}) };
    if (state.key) headers.Authorization = `Bearer ${state.key}`;
    const response = await fetch(path, { ...options, headers });
    if (response.status !== 401) return response;
    await askForKey(state.key ? "That key was not accepted." : "");
  }
}

let keyWaiters = [];
function askForKey(message) {
  const form = $("key-form");
  $("key-status").textContent = message;
  form.hidden = false;
  $("api-key").focus();
  return new Promise((resolve) => keyWaiters.push(resolve));
}

$("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  state.key = $("api-key").value.trim();
  sessionStorage.setItem("rag-api-key", state.key);  // this tab only, gone when it closes
  $("api-key").value = "";
  $("key-form").hidden = true;
  const waiting = keyWaiters;
  keyWaiters = [];
  for (const resolve of waiting) resolve();
});

// The newest turns whose JSON fits the body limit beside the question (each turn capped too).
function trimmedHistory(question) {
  const turns = state.history.slice(-20).map((t) => ({ role: t.role, content: t.content.slice(0, MAX_TURN_CHARS) }));
  const bytes = (value) => new TextEncoder().encode(JSON.stringify(value)).length;
  while (turns.length && bytes({ question, history: turns }) > MAX_BODY_BYTES) turns.splice(0, 2);
  return turns;
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function addMessage(role, text) {
  const li = el("li", `msg ${role}`);
  li.append(document.createTextNode(text));
  $("messages").append(li);
  li.scrollIntoView({ block: "end" });
  return li;
}

// Renders "text [1] more [2]." with the markers as buttons that open their source.
function renderAnswer(li, answer) {
  li.replaceChildren();
  li.classList.toggle("abstained", answer.abstained);
  const noMatch = answer.abstain_reason === NO_MATCH_REASON;
  if (answer.abstained) li.append(el("span", "badge", noMatch ? "No articles match the filters" : "Not in the articles"),
                                  document.createElement("br"));
  const parts = answer.answer.split(/(\[\d+\])/);
  for (const part of parts) {
    const m = /^\[(\d+)\]$/.exec(part);
    if (m && !answer.abstained) {
      const n = Number(m[1]);
      const chip = el("button", "chip", String(n));
      chip.type = "button";
      chip.setAttribute("aria-label", `Source ${n}`);
      chip.addEventListener("click", () => openCitation(answer, n));
      li.append(chip);
    } else {
      li.append(document.createTextNode(part));
    }
  }
  if (answer.standalone_question && answer.standalone_question !== li.dataset.question) {
    li.append(el("span", "rewritten", `Searched for: ${answer.standalone_question}`));
  }
  renderSources(answer);
}

// The cited text with the answer words (a date, an amount, a name) in <strong>, when the answer marks them.
function withAnswerWords(text, start, span) {
  if (!span || span.start < start || span.end > start + text.length) return [document.createTextNode(text)];
  const a = span.start - start, b = span.end - start;
  return [document.createTextNode(text.slice(0, a)), el("strong", "answer-words", text.slice(a, b)),
          document.createTextNode(text.slice(b))];
}

function renderSources(answer) {
  const list = $("sources");
  list.replaceChildren();
  if (!answer.citations.length) {
    list.append(el("li", "empty", "No passages."));
    return;
  }
  for (const c of answer.citations) {
    const li = el("li");
    li.dataset.n = c.n;
    li.tabIndex = 0;
    li.append(el("span", "title", `[${c.n}] ${c.title}`));
    const meta = [c.source, formatDate(c.published)].filter(Boolean).join(" · ");
    if (meta) li.append(el("span", "meta", meta));
    if (answer.abstained) li.append(el("span", "note", "Closest passage; it does not answer the question."));
    const quote = el("span", "quote");
    const shown = c.text.length > 320 ? c.text.slice(0, 317) : c.text;
    quote.append("“", ...withAnswerWords(shown, c.start, answer.abstained ? null : c.answer_span),
                 c.text.length > 320 ? "…”" : "”");
    li.append(quote);
    const open = () => openCitation(answer, c.n);
    li.addEventListener("click", open);
    li.addEventListener("keydown", (e) => { if (e.key === "Enter") open(); });
    list.append(li);
  }
}

async function fetchDocument(docId) {
  if (!state.docs.has(docId)) {
    const r = await api(`/api/documents/${docId.split("/").map(encodeURIComponent).join("/")}`);
    if (!r.ok) throw new Error(`could not load the article (${r.status})`);
    state.docs.set(docId, await r.json());
  }
  return state.docs.get(docId);
}

async function openCitation(answer, n) {
  const c = answer.citations.find((x) => x.n === n);
  if (!c) return;
  for (const li of $("sources").children) li.classList.toggle("active", li.dataset.n === String(n));
  try {
    const doc = await fetchDocument(c.doc_id);
    $("reader-title").textContent = doc.title;
    $("reader-meta").textContent = [doc.source, formatDate(doc.published)].filter(Boolean).join(" · ");
    const text = $("reader-text");
    const mark = el("mark");
    mark.append(...withAnswerWords(doc.text.slice(c.start, c.end), c.start, answer.abstained ? null : c.answer_span));
    mark.id = "cited-span";
    text.replaceChildren(document.createTextNode(doc.text.slice(0, c.start)), mark,
                         document.createTextNode(doc.text.slice(c.end)));
    $("reader").hidden = false;
    mark.scrollIntoView({ block: "center", behavior: "smooth" });
  } catch (err) {
    setStatus(err.message);
  }
}

function setStatus(text) { $("status").textContent = text; }

// 👍 / 👎 under an answer; a choice opens an optional comment, and "Send" stores the rating
// (POST /api/feedback), which `rag eval --from-feedback` turns into eval records to review.
let feedbackCount = 0;
function addFeedback(li, question, answer) {
  const box = el("div", "feedback");
  const button = (text, label) => {
    const b = el("button", "rate", text);
    b.type = "button";
    b.setAttribute("aria-label", label);
    b.setAttribute("aria-pressed", "false");
    return b;
  };
  // Visible words beside the emoji: a system without an emoji font would show two empty boxes.
  const good = button("👍 Good", "Good answer"), bad = button("👎 Bad", "Bad answer");
  const form = el("form", "feedback-form");
  form.hidden = true;
  const comment = el("textarea");
  comment.id = `feedback-comment-${++feedbackCount}`;
  comment.rows = 2;
  comment.maxLength = 2000;
  comment.placeholder = "What was right or wrong? (optional)";
  const label = el("label", "visually-hidden", "Comment on this answer (optional)");
  label.htmlFor = comment.id;
  const send = el("button", "", "Send");
  send.type = "submit";
  form.append(label, comment, send);
  const status = el("span", "feedback-status");
  status.setAttribute("role", "status");
  let rating = 0;
  const choose = (value) => {
    rating = value;
    good.setAttribute("aria-pressed", String(value === 1));
    bad.setAttribute("aria-pressed", String(value === -1));
    form.hidden = false;
    comment.focus();
  };
  good.addEventListener("click", () => choose(1));
  bad.addEventListener("click", () => choose(-1));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    send.disabled = true;
    status.textContent = "Sending…";
    try {
      const response = await api("/api/feedback", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ question, answer: answer.answer, rating, comment: comment.value.trim(),
                               citations: answer.citations, standalone_question: answer.standalone_question || "",
                               abstained: answer.abstained }),
      });
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        throw new Error(body.detail || `request failed (${response.status})`);
      }
      for (const control of [good, bad, comment, send]) control.disabled = true;
      status.textContent = "Thanks — feedback saved";
    } catch (err) {
      send.disabled = false;
      status.textContent = `Feedback not saved: ${err.message}`;
    }
  });
  box.append(good, bad, status, form);
  li.append(box);
}

// "2005-03-14" or "2005-03-14T09:30:00+00:00" as "14 Mar 2005" (the article's own calendar day).
function formatDate(iso) {
  if (!iso) return "";
  const [y, m, d] = iso.slice(0, 10).split("-").map(Number);
  return new Date(Date.UTC(y, m - 1, d)).toLocaleDateString(undefined, { day: "numeric", month: "short", year: "numeric", timeZone: "UTC" });
}

// The filters the panel sets, as /api/chat takes them (null when none is set).
function currentFilters() {
  const f = {};
  if ($("filter-source").value) f.sources = [$("filter-source").value];
  if ($("filter-after").value) f.published_after = $("filter-after").value;
  if ($("filter-before").value) f.published_before = $("filter-before").value;
  return Object.keys(f).length ? f : null;
}

function showFilterCount() {
  const n = Object.keys(currentFilters() || {}).length;
  $("filters-summary").textContent = n ? `Filters (${n} active)` : "Filters";
}

async function loadFacets() {
  try {
    const r = await api("/api/facets");
    if (!r.ok) return;
    const facets = await r.json();
    const select = $("filter-source");
    select.replaceChildren(new Option("Any source", ""));
    for (const s of facets.sources) select.append(new Option(`${s.source} (${s.documents})`, s.source));
    for (const id of ["filter-after", "filter-before"]) {
      if (facets.published.first) $(id).min = facets.published.first.slice(0, 10);
      if (facets.published.last) $(id).max = facets.published.last.slice(0, 10);
    }
  } catch (_) { /* filters stay usable as free input */ }
}

// Minimal SSE parser for a POST response body.
async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).replace(/^ /, "");
      }
      if (data) yield { event, data: JSON.parse(data) };
    }
  }
}

async function ask(question) {
  if (state.busy || !question.trim()) return;
  state.busy = true;
  $("send").disabled = true;
  $("starters").hidden = true;
  setStatus("Searching the articles…");
  addMessage("user", question);
  const bot = addMessage("bot", "");
  bot.dataset.question = question;
  try {
    const response = await api("/api/chat", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify({ question, history: trimmedHistory(question), filters: currentFilters() }),
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(body.detail || `request failed (${response.status})`);
    }
    let streamed = "";
    for await (const { event, data } of sseEvents(response)) {
      if (event === "token") {
        streamed += data.text;
        bot.textContent = streamed;
        setStatus("Answering…");
      } else if (event === "done") {
        renderAnswer(bot, data);
        // A filter that leaves no article says nothing about the answer: nothing to rate.
        if (data.abstain_reason !== NO_MATCH_REASON) addFeedback(bot, question, data);
        state.history.push({ role: "user", content: question }, { role: "assistant", content: data.answer });
        saveTurn(question, data);
        const n = data.citations.length;
        setStatus(data.abstained ? "The articles don't cover this." : `${n} source${n === 1 ? "" : "s"} cited.`);
      } else if (event === "error") {
        throw new Error(data.detail);
      }
    }
  } catch (err) {
    bot.textContent = `Error: ${err.message}`;
    bot.classList.add("abstained");
    setStatus("");
  } finally {
    state.busy = false;
    $("send").disabled = false;
    $("question").focus();
  }
}

async function loadStarters() {
  const box = $("starters");
  box.replaceChildren();
  box.hidden = false;
  try {
    const r = await api("/api/starters");
    if (!r.ok) return;
    for (const q of (await r.json()).questions) {
      const b = el("button", "", q);
      b.type = "button";
      b.addEventListener("click", () => ask(q));
      box.append(b);
    }
  } catch (_) { /* starters are optional */ }
}

// The conversation survives a reload: its turns (question + answer object) in this browser's local
// storage, the newest SAVED_TURNS of them; "New conversation" forgets them.
const SAVED_TURNS = 20;
const STORAGE_KEY = "rag-conversation";

function savedTurns() {
  try { return JSON.parse(localStorage.getItem(STORAGE_KEY) || "[]"); } catch (_) { return []; }
}

function saveTurn(question, answer) {
  const turns = [...savedTurns(), { question, answer }].slice(-SAVED_TURNS);
  while (turns.length) {
    try { localStorage.setItem(STORAGE_KEY, JSON.stringify(turns)); return; } catch (_) { turns.shift(); }  // quota: drop the oldest
  }
}

function restoreConversation() {
  const turns = savedTurns().filter((t) => t && typeof t.question === "string" && t.answer && Array.isArray(t.answer.citations));
  if (!turns.length) return false;
  $("starters").hidden = true;
  for (const { question, answer } of turns) {
    addMessage("user", question);
    const bot = addMessage("bot", "");
    bot.dataset.question = question;
    renderAnswer(bot, answer);
    if (answer.abstain_reason !== NO_MATCH_REASON) addFeedback(bot, question, answer);
    state.history.push({ role: "user", content: question }, { role: "assistant", content: answer.answer });
  }
  setStatus(`Conversation restored (${turns.length} question${turns.length === 1 ? "" : "s"}).`);
  return true;
}

function newConversation() {
  localStorage.removeItem(STORAGE_KEY);
  state.history = [];
  $("messages").replaceChildren();
  $("sources").replaceChildren(el("li", "empty", "Cited passages appear here."));
  $("reader").hidden = true;
  setStatus("");
  loadStarters();
  $("question").focus();
}

$("ask").addEventListener("submit", (e) => {
  e.preventDefault();
  const q = $("question").value;
  $("question").value = "";
  ask(q);
});
$("question").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $("ask").requestSubmit();
  }
});
$("new-chat").addEventListener("click", newConversation);
for (const id of ["filter-source", "filter-after", "filter-before"]) $(id).addEventListener("change", showFilterCount);
$("filter-clear").addEventListener("click", () => {
  for (const id of ["filter-source", "filter-after", "filter-before"]) $(id).value = "";
  showFilterCount();
});
// "Add articles": POST /api/documents as multipart, with upload progress (XMLHttpRequest: fetch has none),
// then the report per file. A 401 asks for the key and sends the files again.
function sendFiles(form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/documents");
    if (state.key) xhr.setRequestHeader("Authorization", `Bearer ${state.key}`);
    xhr.upload.addEventListener("progress", (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); });
    xhr.upload.addEventListener("load", () => onProgress(1));
    xhr.addEventListener("load", () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON: status alone */ }
      resolve({ status: xhr.status, body });
    });
    xhr.addEventListener("error", () => reject(new Error("the upload did not reach the server")));
    xhr.send(form);
  });
}

function describeItem(item) {
  const li = el("li");
  li.append(el("span", "name", item.name), document.createTextNode(": "));
  const done = item.documents.map((d) => `${d.status} as ${d.doc_id}`).join(", ");
  if (done) li.append(document.createTextNode(done));
  for (const reason of item.skipped) li.append(el("span", "skipped", `${done ? "; " : ""}skipped: ${reason}`));
  return li;
}

async function uploadFiles(files) {
  if (!files.length || state.uploading) return;
  state.uploading = true;
  const bar = $("upload-progress"), status = $("upload-status"), report = $("upload-report");
  const form = new FormData();
  for (const file of files) form.append("files", file, file.name);
  report.replaceChildren();
  $("upload-files").disabled = true;
  try {
    for (;;) {
      bar.hidden = false;
      bar.value = 0;
      status.textContent = `Uploading ${files.length} file${files.length === 1 ? "" : "s"}…`;
      const { status: code, body } = await sendFiles(form, (share) => {
        bar.value = Math.round(share * 100);
        if (share >= 1) status.textContent = "Adding to the index…";
      });
      if (code === 401) { await askForKey(state.key ? "That key was not accepted." : ""); continue; }
      if (code !== 200) throw new Error(body.detail || `upload failed (${code})`);
      for (const item of body.files) report.append(describeItem(item));
      const added = body.added.length + body.updated.length;
      status.textContent = `${added} article${added === 1 ? "" : "s"} added or updated, ${body.skipped} skipped; `
        + `${body.documents_total} articles in the index.`;
      state.docs.clear();  // an updated article must be read again
      loadFacets();
      break;
    }
  } catch (err) {
    status.textContent = `Error: ${err.message}`;
  } finally {
    bar.hidden = true;
    state.uploading = false;
    $("upload-files").disabled = false;
    $("upload-files").value = "";
  }
}

$("upload-files").addEventListener("change", (e) => uploadFiles([...e.target.files]));
const dropZone = $("drop-zone");
dropZone.addEventListener("dragover", (e) => { e.preventDefault(); dropZone.classList.add("over"); });
dropZone.addEventListener("dragleave", () => dropZone.classList.remove("over"));
dropZone.addEventListener("drop", (e) => {
  e.preventDefault();
  dropZone.classList.remove("over");
  uploadFiles([...e.dataTransfer.files]);
});

loadFacets();
$("reader-close").addEventListener("click", () => { $("reader").hidden = true; });
if (!restoreConversation()) newConversation();
