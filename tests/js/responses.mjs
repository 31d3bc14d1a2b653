// The official JavaScript SDK's Responses API against a running TokenDock, driven by
// tests/e2e/test_js_sdk.py: `node responses.mjs CHECK 'ARGS-JSON'` makes one request and prints
// what the SDK gave back as one JSON line (as sdk.mjs does for chat completions).
import OpenAI from "openai";

const [check, argsJson] = process.argv.slice(2);
const args = JSON.parse(argsJson ?? "{}");

const client = new OpenAI({
  baseURL: process.env.TOKENDOCK_BASE_URL,
  apiKey: process.env.TOKENDOCK_API_KEY,
  maxRetries: 0,
  timeout: 120_000,
});

const checks = {
  // One whole response: the SDK's output_text convenience, the items and the usage.
  async create() {
    const response = await client.responses.create(args.request);
    return summary(response);
  },

  // The same streamed through the SDK's helper, which assembles the typed events.
  async stream() {
    const stream = client.responses.stream(args.request);
    const events = {};
    const deltas = { text: "", arguments: "" };
    const numbers = [];
    for await (const event of stream) {
      events[event.type] = (events[event.type] ?? 0) + 1;
      numbers.push(event.sequence_number);
      if (event.type === "response.output_text.delta") deltas.text += event.delta;
      if (event.type === "response.function_call_arguments.delta") deltas.arguments += event.delta;
    }
    const response = await stream.finalResponse();
    return { ...summary(response), events, deltas, numbers };
  },
};

function summary(response) {
  return {
    id: response.id,
    status: response.status,
    output_text: response.output_text,
    output: response.output,
    usage: response.usage,
  };
}

if (!(check in checks)) {
  console.error(`unknown check ${check}; one of ${Object.keys(checks).join(", ")}`);
  process.exit(2);
}
const result = await checks[check]();
process.stdout.write(JSON.stringify(result) + "\n");
