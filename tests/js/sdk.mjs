// The official JavaScript SDK (npm `openai`) against a running TokenDock, driven by
// tests/e2e/test_js_sdk.py: `node sdk.mjs CHECK 'ARGS-JSON'` makes one request through the SDK
// and prints what the SDK gave back (plus the request bodies it sent) as one JSON line.
// Anything the SDK throws ends the process with a non-zero status and the error on stderr.
import OpenAI from "openai";

const [check, argsJson] = process.argv.slice(2);
const args = JSON.parse(argsJson ?? "{}");
const sent = []; // the JSON bodies the SDK sent, to see what it asked for by default

const client = new OpenAI({
  baseURL: process.env.TOKENDOCK_BASE_URL,
  apiKey: process.env.TOKENDOCK_API_KEY,
  maxRetries: 0,
  timeout: 120_000,
  fetch: async (url, init) => {
    if (typeof init?.body === "string") sent.push(JSON.parse(init.body));
    return fetch(url, init);
  },
});

const checks = {
  // A tool call: finish_reason, the calls, and each call's arguments through JSON.parse.
  async tool() {
    const completion = await client.chat.completions.create(args.request);
    return calls(completion);
  },

  // The same through the SDK's stream helper, which reassembles the tool-call deltas.
  async "tool-stream"() {
    const stream = client.chat.completions.stream({ ...args.request, stream: true });
    let chunks = 0;
    stream.on("chunk", () => (chunks += 1));
    const completion = await stream.finalChatCompletion();
    return { ...calls(completion), chunks };
  },

  // A JSON-schema answer: its content through JSON.parse.
  async json() {
    const completion = await client.chat.completions.create(args.request);
    const choice = completion.choices[0];
    const content = choice.message.content;
    return { finish_reason: choice.finish_reason, content, parsed: JSON.parse(content) };
  },

  // Embeddings as the SDK asks for them by default (base64, decoded by the SDK).
  async embed() {
    const reply = await client.embeddings.create(args.request);
    return {
      data: reply.data.map((d) => ({
        index: d.index,
        is_array: Array.isArray(d.embedding),
        embedding: Array.from(d.embedding),
      })),
      model: reply.model,
      usage: reply.usage,
    };
  },
};

function calls(completion) {
  const choice = completion.choices[0];
  const toolCalls = choice.message.tool_calls ?? [];
  return {
    finish_reason: choice.finish_reason,
    tool_calls: toolCalls,
    arguments: toolCalls.map((c) => JSON.parse(c.function.arguments)),
  };
}

if (!(check in checks)) {
  console.error(`unknown check ${check}; one of ${Object.keys(checks).join(", ")}`);
  process.exit(2);
}
const result = await checks[check]();
process.stdout.write(JSON.stringify({ ...result, sent }) + "\n");
