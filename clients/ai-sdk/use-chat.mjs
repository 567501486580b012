// What `useChat` does, without React: the AI SDK's own chat (`AbstractChat`, the class behind
// `@ai-sdk/react`'s `Chat`) over its `DefaultChatTransport`, against a relay's /api/chat.
//
// Usage: node use-chat.mjs '<json>' where the JSON is
//   {"api": "http://127.0.0.1:PORT/api/chat", "headers": {...}, "body": {...},
//    "turns": ["first question", "second question"], "regenerate": false, "raw": false,
//    "toolOutputs": {"tool_name": <output>, ...}}
// Prints one JSON object: the chat's status, error message, messages and finish callbacks;
// with "raw": true, the UI message chunks of one request as the transport parsed them.
// With "toolOutputs", the chat runs client-side tools as `useChat` apps do: `onToolCall`
// answers each call with `addToolOutput` (the tool's output, or an output-error for a tool
// it does not know), and `sendAutomaticallyWhen` sends the results back; the calls it saw
// are printed as `toolCalls`.
import {
  AbstractChat,
  DefaultChatTransport,
  lastAssistantMessageIsCompleteWithToolCalls,
} from "ai";

class ArrayChatState {
  constructor() {
    this.status = "ready";
    this.error = undefined;
    this.messages = [];
  }
  pushMessage = (message) => {
    this.messages = this.messages.concat(message);
  };
  popMessage = () => {
    this.messages = this.messages.slice(0, -1);
  };
  replaceMessage = (index, message) => {
    this.messages = [...this.messages.slice(0, index), message, ...this.messages.slice(index + 1)];
  };
  snapshot = (value) => structuredClone(value);
}

class Chat extends AbstractChat {
  constructor(options) {
    super({ ...options, state: new ArrayChatState() });
  }
}

const options = JSON.parse(process.argv[2]);
const transport = new DefaultChatTransport({
  api: options.api,
  headers: options.headers ?? {},
  body: options.body,
});

if (options.raw) {
  // The chunks of one request exactly as the transport parses them (errors included).
  const chunks = [];
  let failure = null;
  try {
    const stream = await transport.sendMessages({
      chatId: "raw",
      messages: [{ id: "u1", role: "user", parts: [{ type: "text", text: options.turns[0] }] }],
      trigger: "submit-message",
      messageId: undefined,
      abortSignal: undefined,
    });
    for await (const chunk of stream) chunks.push(chunk);
  } catch (error) {
    failure = { name: error.name, message: error.message, statusCode: error.statusCode ?? null };
  }
  console.log(JSON.stringify({ chunks, failure }));
} else {
  const finishes = [];
  const errors = [];
  const toolCalls = [];
  const tools = options.toolOutputs;
  const chat = new Chat({
    transport,
    onFinish: ({ message, isError, finishReason }) =>
      finishes.push({ id: message.id, isError, finishReason, metadata: message.metadata ?? null }),
    onError: (error) => errors.push(error.message),
    ...(tools && {
      sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithToolCalls,
      onToolCall: ({ toolCall }) => {
        const { toolName, toolCallId, input } = toolCall;
        toolCalls.push({ toolName, toolCallId, input });
        // Not awaited, as the SDK's documentation says (the chat is busy with the stream).
        if (Object.hasOwn(tools, toolName)) {
          chat.addToolOutput({ tool: toolName, toolCallId, output: tools[toolName] });
        } else {
          chat.addToolOutput({ state: "output-error", toolCallId, errorText: "no such tool" });
        }
      },
    }),
  });
  // An automatic send may start after `sendMessage` has returned: wait until the chat has
  // been idle for a while.
  const settled = async () => {
    for (let quiet = 0; quiet < 5; ) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      quiet = chat.status === "ready" || chat.status === "error" ? quiet + 1 : 0;
    }
  };
  for (const text of options.turns) {
    await chat.sendMessage({ text });
    if (tools) await settled();
    if (chat.status === "error") break;
  }
  if (options.regenerate && chat.status !== "error") await chat.regenerate();
  console.log(
    JSON.stringify({
      status: chat.status,
      error: chat.error ? { name: chat.error.name, message: chat.error.message } : null,
      errors,
      finishes,
      toolCalls,
      messages: chat.messages.map(({ id, role, parts }) => ({ id, role, parts })),
    }),
  );
}
