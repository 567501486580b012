// The demo chat page: a conversation rendered as text while it streams, over chat-client.js,
// and what is left of the caller's plan (GET /me) in its header.
import { ChatError, fetchMe, streamChat } from "/static/chat-client.js";

const $ = (id) => document.getElementById(id);
const conversation = $("conversation");
const prompt = $("prompt");
const sendButton = $("send");
const stopButton = $("stop");
const budget = $("budget");
const history = [];
let controller = null;
let tokenGetter = null;
let budgetReads = 0;

/**
 * Sign the page's requests in with your identity provider: `getToken` is an async function that
 * returns the current access token (for example your OIDC client library's), called before
 * every request. Without one, the page sends the token from its Settings panel, if any.
 *
 *   import { setTokenGetter } from "/static/app.js";
 *   setTokenGetter(() => auth.getAccessToken());
 */
export function setTokenGetter(getToken) {
  tokenGetter = getToken;
  showBudget();
}

/**
 * The demo's one tool, harmless: the browser's time zone. The model can call it when the relay
 * offers it (`CHAT_TOOLS` declares `get_time_zone`, as `make dev` does); a tool the relay offers
 * that this page does not have gets an error for an answer, which the model reads.
 */
const pageTools = {
  get_time_zone: () => Intl.DateTimeFormat().resolvedOptions().timeZone,
};

async function runPageTool({ name, input }) {
  if (!Object.hasOwn(pageTools, name)) throw new Error(`this page has no tool named ${name}`);
  return pageTools[name](input);
}

const settings = {
  get endpoint() { return localStorage.getItem("relay.endpoint") || "/chat"; },
  get token() { return localStorage.getItem("relay.token") || ""; },
};

/** The relay's `/me`, beside the chat endpoint (`…/chat` → `…/me`, whatever path it is under). */
function meUrl() {
  return new URL("me", new URL(settings.endpoint, location.href)).href;
}

// The relay settles an answer's charge and gives its stream slot back just after the last byte,
// so the budget is read again this much after an answer, to show the settled figures.
const SETTLED_AFTER_MS = 1500;

// What `/me` has left of each limit, with its label (singular, plural).
const BUDGET_FIGURES = [
  ["requests_this_minute", "request this minute", "requests this minute"],
  ["tokens_today", "token today", "tokens today"],
  ["streams", "stream", "streams"],
];

/** The caller's plan and what is left of it, as `/me` says; null for an answer of another shape. */
function budgetParts(me) {
  if (typeof me?.plan !== "string" || typeof me.left !== "object") return null;
  const plan = document.createElement("span");
  plan.className = "plan";
  plan.textContent = me.plan;
  if (me.left === null) return ["Plan ", plan, " · no limits"];
  const figures = [];
  for (const [name, one, many] of BUDGET_FIGURES) {
    const left = me.left[name];
    if (!Number.isSafeInteger(left)) continue; // that limit is off
    const figure = document.createElement("span");
    figure.dataset.left = name;
    figure.textContent = `${left.toLocaleString("en-US")} ${left === 1 ? one : many}`;
    figures.push(figures.length ? ", " : " · left: ", figure);
  }
  return ["Plan ", plan, ...figures];
}

/**
 * Read `/me` with the chat's credentials and show the plan and what is left; a read that fails
 * (not signed in yet, a relay without `/me`, the network) hides it rather than show old figures.
 * Never throws: the chat does not depend on it.
 */
async function showBudget() {
  const read = ++budgetReads;
  let parts = null;
  try {
    const me = await fetchMe({ url: meUrl(), token: settings.token, getToken: tokenGetter });
    parts = budgetParts(me);
  } catch {
    // nothing to show
  }
  if (read !== budgetReads) return; // a later read has started: its answer is the newer
  budget.replaceChildren(...(parts ?? []));
  budget.hidden = parts === null;
}

function addTurn(role) {
  const item = document.createElement("li");
  item.className = `turn ${role}`;
  const label = document.createElement("p");
  label.className = "role";
  label.textContent = role === "user" ? "You" : "Assistant";
  const text = document.createElement("p");
  text.className = "text";
  item.append(label, text);
  conversation.append(item);
  return { item, text };
}

function addLine(turn, className, content) {
  const line = document.createElement("p");
  line.className = className;
  line.textContent = content;
  turn.item.append(line);
  return line;
}

function describe(error) {
  if (error.name === "AbortError") return "Stopped.";
  if (error instanceof ChatError) return `Error (${error.type}): ${error.message}`;
  return `Error: ${error.message}`;
}

async function send(question) {
  history.push({ role: "user", content: question });
  addTurn("user").text.textContent = question;
  const answer = addTurn("assistant");
  answer.text.setAttribute("aria-live", "polite");
  answer.item.setAttribute("aria-busy", "true");
  const metrics = addLine(answer, "metrics", "waiting for the first token…");
  answer.item.scrollIntoView({ block: "end" });

  controller = new AbortController();
  sendButton.disabled = true;
  stopButton.disabled = false;
  const started = performance.now();
  let firstAt = null;
  let pieces = 0;
  let text = "";
  try {
    const stream = streamChat({
      url: settings.endpoint,
      messages: history,
      token: settings.token,
      getToken: tokenGetter,
      signal: controller.signal,
      onToolCall: runPageTool,
    });
    const toolLines = new Map();
    for await (const part of stream) {
      if (part.type === "tool_call") {
        toolLines.set(part.id, addLine(answer, "tool", `Tool ${part.name}: running…`));
      } else if (part.type === "tool_result") {
        toolLines.get(part.id).textContent = `Tool ${part.name}: ${part.content}`;
      } else if (part.type === "done") {
        history.push(...part.messages); // the answer, with its tool calls and results
      }
      if (part.type !== "delta") continue;
      const now = performance.now();
      firstAt ??= now;
      pieces += 1;
      text += part.text;
      answer.text.append(part.text); // a text node: model output is never parsed as HTML
      const seconds = (now - firstAt) / 1000;
      const rate = seconds >= 0.05 ? ((pieces - 1) / seconds).toFixed(1) : "…";
      metrics.textContent = `first token ${Math.round(firstAt - started)} ms · ${rate} tokens/s`;
    }
  } catch (error) {
    if (text) history.push({ role: "assistant", content: text });
    if (firstAt === null) metrics.remove();
    addLine(answer, "error", describe(error)).setAttribute("role", "alert");
  } finally {
    answer.item.setAttribute("aria-busy", "false");
    controller = null;
    sendButton.disabled = false;
    stopButton.disabled = true;
    prompt.focus();
    showBudget(); // the answer has used some of it
    setTimeout(showBudget, SETTLED_AFTER_MS);
  }
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const question = prompt.value.trim();
  if (!question || controller) return;
  prompt.value = "";
  send(question);
});

prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});

stopButton.addEventListener("click", () => controller?.abort());

$("endpoint").value = localStorage.getItem("relay.endpoint") || "";
$("token").value = settings.token;
$("settings-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const endpoint = $("endpoint").value.trim();
  const token = $("token").value.trim();
  endpoint ? localStorage.setItem("relay.endpoint", endpoint) : localStorage.removeItem("relay.endpoint");
  token ? localStorage.setItem("relay.token", token) : localStorage.removeItem("relay.token");
  $("settings-status").textContent = "Saved.";
  showBudget();
});

showBudget();
