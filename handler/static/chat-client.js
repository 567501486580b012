// chat-client.js: stream an answer from the relay's `POST /chat` (Server-Sent Events) in any
// browser frontend. No dependencies; `EventSource` cannot POST, so this reads the fetch body.
//
//   import { streamChat } from "/static/chat-client.js";
//   for await (const part of streamChat({ url: "/chat", messages, getToken, onToolCall })) {
//     if (part.type === "delta") output.textContent += part.text;
//     if (part.type === "done") messages.push(...part.messages);
//   }
//
// `getToken` is any async function returning the current access token (an OIDC client
// library's, for a signed-in user); it is called for every request, so a refreshed token is
// used as soon as the library has it. `token` takes a fixed client token instead.
//
// `fetchMe({url: "/me", getToken})` reads what the relay knows of the caller (their plan and
// what is left of it), with the same credentials, for a page to show.

/** A failure with the relay's error type (`upstream_timeout`, `unauthorized`, ...). */
export class ChatError extends Error {
  constructor(type, message, status = null) {
    super(message);
    this.name = "ChatError";
    this.type = type;
    this.status = status;
  }
}

/**
 * An incremental SSE parser (the WHATWG event-stream rules): feed it text as it arrives,
 * in pieces of any size; it returns the events each piece completed.
 * Events are `{event, data}`; comment lines (`: ping`) come back as `{comment}`.
 */
export class SseParser {
  #buffer = "";
  #data = [];
  #event = "";

  push(text) {
    const events = [];
    const input = this.#buffer + text;
    let start = 0;
    for (let i = 0; i < input.length; i++) {
      const c = input[i];
      if (c !== "\n" && c !== "\r") continue;
      if (c === "\r" && i + 1 === input.length) break; // a "\r\n" may be split across reads
      const line = input.slice(start, i);
      if (c === "\r" && input[i + 1] === "\n") i++;
      start = i + 1;
      this.#line(line, events);
    }
    this.#buffer = input.slice(start);
    return events;
  }

  /** The stream ended: a last line cut after "\r" still counts; an unfinished event does not. */
  end() {
    const events = [];
    if (this.#buffer.endsWith("\r")) this.#line(this.#buffer.slice(0, -1), events);
    this.#buffer = "";
    this.#data = [];
    this.#event = "";
    return events;
  }

  #line(line, events) {
    if (line === "") {
      if (this.#data.length) {
        events.push({ event: this.#event || "message", data: this.#data.join("\n") });
      }
      this.#data = [];
      this.#event = "";
      return;
    }
    if (line[0] === ":") {
      events.push({ comment: line.slice(1).trimStart() });
      return;
    }
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value[0] === " ") value = value.slice(1);
    if (field === "data") this.#data.push(value);
    else if (field === "event") this.#event = value;
  }
}

async function errorFromResponse(response) {
  let type = "http_error";
  let message = `HTTP ${response.status}`;
  try {
    const body = await response.json();
    type = body?.error?.type ?? type;
    message = body?.error?.message ?? message;
  } catch {
    // not JSON: keep the status line
  }
  return new ChatError(type, message, response.status);
}

/** The bearer for one request: from the token getter when there is one, else the fixed token. */
async function bearerFor(token, getToken) {
  if (!getToken) return token;
  try {
    return await getToken();
  } catch (error) {
    throw new ChatError("token_unavailable", `could not get an access token: ${error.message}`);
  }
}

/** The request's headers, with the bearer for it when there is one. */
async function headersWith(headers, token, getToken) {
  const bearer = await bearerFor(token, getToken);
  return bearer ? { ...headers, authorization: `Bearer ${bearer}` } : headers;
}

/**
 * The caller as the relay knows them (`GET /me`): `{caller, plan, limits, used, left}`, where
 * `left` is what remains now of each limit (`requests_this_minute`, `tokens_today`, `streams`;
 * `null` for a limit that is off, and `left` itself `null` when the plan counts nothing).
 * Credentials as `streamChat`'s; throws `ChatError` when the relay does not answer with it
 * (`unauthorized`, `network_error`, ...).
 */
export async function fetchMe({ url = "/me", token, getToken, signal } = {}) {
  const headers = await headersWith({ accept: "application/json" }, token, getToken);
  let response;
  try {
    response = await fetch(url, { headers, signal, cache: "no-store" });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ChatError("network_error", `could not reach ${url}: ${error.message}`);
  }
  if (!response.ok) throw await errorFromResponse(response);
  try {
    return await response.json();
  } catch {
    throw new ChatError("invalid_response", `${url} did not answer with JSON`, response.status);
  }
}

/**
 * Stream one answer. Yields `{type: "delta", text}` for each piece of text and finally
 * `{type: "done", finish_reason, model, usage, messages}`, where `messages` are the turns this
 * answer adds to the conversation (the assistant's text, and its tool calls and their
 * results); throws `ChatError` for an error response, an `event: error`, or a stream that stops
 * before `done`. Pass an AbortSignal to stop it (the relay then closes its upstream request).
 * Credentials: `getToken` (an async function that returns the current access token) or `token`
 * (a fixed client token).
 *
 * Tools (the relay's `CHAT_TOOLS`): the model's calls arrive as `{type: "tool_input", id, name,
 * delta}` while their arguments stream, then `{type: "tool_call", id, name, arguments, input}`
 * (`input` is the parsed arguments, `undefined` when they are not JSON). With `onToolCall`, an
 * async function of the call that returns the tool's output, each call is run, its result
 * yielded as `{type: "tool_result", id, name, content, error}` and sent back, and the answer
 * goes on, for at most `maxToolSteps` round trips. `tools` narrows the relay's tools by name.
 */
export async function* streamChat({
  url = "/chat", messages, prompt, token, getToken, signal, model, tools, onToolCall,
  maxToolSteps = 8,
} = {}) {
  const conversation = messages ?? [{ role: "user", content: prompt }];
  const added = [];
  for (let step = 0; ; step++) {
    const body = messages || added.length ? { messages: [...conversation, ...added] } : { prompt };
    if (model) body.model = model;
    if (tools) body.tools = tools;
    let text = "";
    const calls = [];
    let done;
    for await (const part of streamOneAnswer(url, body, token, getToken, signal)) {
      if (part.type === "done") {
        done = part;
        break;
      }
      if (part.type === "delta") text += part.text;
      else if (part.type === "tool_call") calls.push(part);
      yield part;
    }
    if (text || calls.length) added.push(assistantTurn(text, calls));
    if (!calls.length || !onToolCall || step >= maxToolSteps) {
      yield { ...done, messages: added };
      return;
    }
    for (const call of calls) {
      const result = await runTool(onToolCall, call);
      yield { type: "tool_result", id: call.id, name: call.name, ...result };
      added.push({ role: "tool", tool_call_id: call.id, content: result.content });
    }
  }
}

/** The assistant's turn as the relay takes it back: its text and its tool calls. */
function assistantTurn(text, calls) {
  if (!calls.length) return { role: "assistant", content: text };
  const tool_calls = calls.map(({ id, name, arguments: args }) => ({
    id, type: "function", function: { name, arguments: args },
  }));
  return { role: "assistant", content: text || null, tool_calls };
}

/** Run one tool call; a tool that throws answers with its error, so the model can read it. */
async function runTool(onToolCall, call) {
  try {
    const output = await onToolCall(call);
    return { content: typeof output === "string" ? output : JSON.stringify(output ?? null) };
  } catch (error) {
    return { content: `Error: ${error.message}`, error: error.message };
  }
}

function parsedArguments(text) {
  try {
    return text.trim() ? JSON.parse(text) : {};
  } catch {
    return undefined;
  }
}

/** One request's stream of parts (`delta`, `tool_input`, `tool_call`, then `done`). */
async function* streamOneAnswer(url, body, token, getToken, signal) {
  const headers = await headersWith(
    { "content-type": "application/json", accept: "text/event-stream" }, token, getToken,
  );
  let response;
  try {
    response = await fetch(url, { method: "POST", headers, body: JSON.stringify(body), signal });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ChatError("network_error", `could not reach ${url}: ${error.message}`);
  }
  if (!response.ok) throw await errorFromResponse(response);

  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = new SseParser();
  try {
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (error) {
        if (error.name === "AbortError") throw error;
        throw new ChatError("network_error", "the connection broke off mid-answer");
      }
      const events = chunk.done ? parser.end() : parser.push(chunk.value);
      for (const { event, data } of events) {
        if (event === undefined) continue; // a comment (keep-alive ping)
        const payload = JSON.parse(data);
        if (event === "message") yield { type: "delta", text: payload.delta };
        else if (event === "tool_call" && "arguments" in payload) {
          const { id, name, arguments: args } = payload;
          yield { type: "tool_call", id, name, arguments: args, input: parsedArguments(args) };
        } else if (event === "tool_call") {
          yield { type: "tool_input", id: payload.id, name: payload.name, delta: payload.delta };
        } else if (event === "done") {
          yield { type: "done", ...payload };
          return;
        } else if (event === "error") {
          throw new ChatError(payload.error.type, payload.error.message);
        }
      }
      if (chunk.done) break;
    }
  } finally {
    reader.cancel().catch(() => {});
  }
  throw new ChatError("incomplete", "the answer stopped before it was complete");
}
