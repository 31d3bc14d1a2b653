// The playground: streams a chat completion from /v1/chat/completions and shows it as it comes
// (text, a JSON answer, or tool calls), or embeds the message with /v1/embeddings.
(() => {
  const form = document.getElementById("playground");
  if (!form) return;
  const conversation = document.getElementById("conversation");
  const usageLine = document.getElementById("usage");
  const problem = document.getElementById("problem");
  const send = document.getElementById("send");
  const stop = document.getElementById("stop");
  const panels = {
    json: document.getElementById("json-options"),
    tools: document.getElementById("tool-options"),
  };
  let history = [];
  let controller = null;

  function bubble(role, text) {
    document.getElementById("empty")?.remove();
    const item = document.createElement("div");
    item.className = `turn ${role}`;
    const who = document.createElement("strong");
    who.textContent = role === "user" ? "You" : "Assistant";
    const body = document.createElement("p");
    body.textContent = text;
    item.append(who, body);
    conversation.append(item);
    return body;
  }

  // Embedding models only in the embeddings mode, chat models only in the others.
  function showMode() {
    const mode = form.mode.value;
    panels.json.hidden = mode !== "json";
    panels.tools.hidden = mode !== "tools";
    form.max_tokens.disabled = mode === "embeddings";
    form.system.disabled = mode === "embeddings";
    const task = mode === "embeddings" ? "embedding" : "generation";
    for (const option of form.model.options) {
      const fits = option.dataset.task === task;
      option.hidden = !fits;
      option.disabled = !fits;
    }
    if (form.model.selectedOptions[0]?.disabled !== false) {
      const first = [...form.model.options].find((o) => !o.disabled);
      form.model.value = first ? first.value : "";
    }
  }
  form.mode.addEventListener("change", showMode);
  showMode();

  document.getElementById("reset").addEventListener("click", () => {
    history = [];
    conversation.replaceChildren();
    usageLine.textContent = "";
    problem.textContent = "";
  });
  stop.addEventListener("click", () => controller?.abort());

  function parsed(field, what) {
    try {
      return JSON.parse(field.value);
    } catch (error) {
      throw new Error(`The ${what} is not valid JSON: ${error.message}`);
    }
  }

  function chatBody(messages) {
    const body = {
      model: form.model.value,
      messages,
      max_tokens: parseInt(form.max_tokens.value, 10) || 128,
      stream: true,
      stream_options: { include_usage: true },
    };
    if (form.mode.value === "json") {
      body.response_format = form.schema.value.trim()
        ? { type: "json_schema", json_schema: { name: "answer", strict: true, schema: parsed(form.schema, "JSON schema") } }
        : { type: "json_object" };
    } else if (form.mode.value === "tools") {
      body.tools = parsed(form.tools, "tools list");
      body.tool_choice = form.tool_choice.value;
      body.parallel_tool_calls = form.parallel.checked;
    }
    return body;
  }

  async function call(path, body) {
    const response = await fetch(path, {
      method: "POST",
      signal: controller.signal,
      headers: { "Content-Type": "application/json", "X-TokenDock-CSRF": form.dataset.csrf },
      body: JSON.stringify(body),
    });
    if (!response.ok) {
      const answer = await response.json().catch(() => ({}));
      throw new Error(answer.error?.message || `HTTP ${response.status}`);
    }
    return response;
  }

  function usageText(u, finish) {
    const tokens = u.completion_tokens
      ? `${u.prompt_tokens} prompt + ${u.completion_tokens} completion tokens`
      : `${u.prompt_tokens} prompt tokens`;
    return `${tokens} · cost ${u.cost} credits${finish ? ` · finish: ${finish}` : ""}`;
  }

  async function embed(message, output) {
    const response = await call("/v1/embeddings", {
      model: form.model.value,
      input: message,
      encoding_format: "float",
    });
    const answer = await response.json();
    const vector = answer.data[0].embedding;
    const head = vector.slice(0, 8).map((x) => x.toFixed(4)).join(", ");
    output.textContent = `${vector.length} dimensions: [${head}, …]`;
    output.dataset.dimensions = String(vector.length);
    usageLine.textContent = usageText(answer.usage, null);
  }

  // One pre per tool call, filled in as its deltas come (name first, then argument pieces).
  function toolCallView(output, calls, delta) {
    let entry = calls[delta.index];
    if (!entry) {
      const view = document.createElement("pre");
      view.className = "tool-call";
      view.dataset.testid = "tool-call";
      output.after(view);
      entry = calls[delta.index] = { id: "", name: "", arguments: "", view };
    }
    if (delta.id) entry.id = delta.id;
    if (delta.function?.name) entry.name += delta.function.name;
    if (delta.function?.arguments) entry.arguments += delta.function.arguments;
    entry.view.textContent = `${entry.name}(${entry.arguments})`;
    entry.view.dataset.name = entry.name;
    entry.view.dataset.arguments = entry.arguments;
  }

  async function chat(messages, output) {
    const response = await call("/v1/chat/completions", chatBody(messages));
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    const calls = [];
    let buffer = "";
    let finish = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (!frame.startsWith("data: ")) continue;
        const data = frame.slice(6);
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        const choice = chunk.choices?.[0];
        const piece = choice?.delta?.content;
        if (piece) {
          output.textContent += piece;
          output.dataset.chunks = String(Number(output.dataset.chunks) + 1);
        }
        for (const delta of choice?.delta?.tool_calls || []) toolCallView(output, calls, delta);
        if (choice?.finish_reason) finish = choice.finish_reason;
        if (chunk.usage) usageLine.textContent = usageText(chunk.usage, finish);
      }
    }
    const turn = { role: "assistant", content: output.textContent || null };
    if (calls.length) {
      turn.tool_calls = calls.map((c) => ({
        id: c.id,
        type: "function",
        function: { name: c.name, arguments: c.arguments },
      }));
    }
    history.push(turn);
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = form.message.value.trim();
    if (!message) return;
    problem.textContent = "";
    usageLine.textContent = "";
    const embedding = form.mode.value === "embeddings";
    const turn = { role: "user", content: message };
    const messages = form.system.value.trim()
      ? [{ role: "system", content: form.system.value.trim() }, ...history, turn]
      : [...history, turn];
    bubble("user", message);
    form.message.value = "";
    const output = bubble("assistant", "");
    output.dataset.chunks = "0";
    controller = new AbortController();
    send.disabled = true;
    stop.disabled = false;
    try {
      if (embedding) {
        await embed(message, output);
      } else {
        history.push(turn);
        await chat(messages, output);
      }
    } catch (error) {
      problem.textContent = error.name === "AbortError" ? "Stopped." : error.message;
    } finally {
      send.disabled = false;
      stop.disabled = true;
      controller = null;
    }
  });
})();
