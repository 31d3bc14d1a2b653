// The playground: streams a chat completion from /v1/chat/completions and shows it as it comes.
(() => {
  const form = document.getElementById("playground");
  if (!form) return;
  const conversation = document.getElementById("conversation");
  const usageLine = document.getElementById("usage");
  const problem = document.getElementById("problem");
  const send = document.getElementById("send");
  const stop = document.getElementById("stop");
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

  document.getElementById("reset").addEventListener("click", () => {
    history = [];
    conversation.replaceChildren();
    usageLine.textContent = "";
    problem.textContent = "";
  });
  stop.addEventListener("click", () => controller?.abort());

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = form.message.value.trim();
    if (!message) return;
    problem.textContent = "";
    usageLine.textContent = "";
    history.push({ role: "user", content: message });
    bubble("user", message);
    form.message.value = "";
    const output = bubble("assistant", "");
    output.dataset.chunks = "0";
    const messages = form.system.value.trim()
      ? [{ role: "system", content: form.system.value.trim() }, ...history]
      : history;
    controller = new AbortController();
    send.disabled = true;
    stop.disabled = false;
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST",
        signal: controller.signal,
        headers: { "Content-Type": "application/json", "X-TokenDock-CSRF": form.dataset.csrf },
        body: JSON.stringify({
          model: form.model.value,
          messages,
          max_tokens: parseInt(form.max_tokens.value, 10) || 128,
          stream: true,
          stream_options: { include_usage: true },
        }),
      });
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        throw new Error(body.error?.message || `HTTP ${response.status}`);
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
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
          const piece = chunk.choices?.[0]?.delta?.content;
          if (piece) {
            output.textContent += piece;
            output.dataset.chunks = String(Number(output.dataset.chunks) + 1);
          }
          if (chunk.usage) {
            const u = chunk.usage;
            usageLine.textContent = `${u.prompt_tokens} prompt + ${u.completion_tokens} completion tokens · cost ${u.cost} credits`;
          }
        }
      }
      history.push({ role: "assistant", content: output.textContent });
    } catch (error) {
      problem.textContent = error.name === "AbortError" ? "Stopped." : error.message;
    } finally {
      send.disabled = false;
      stop.disabled = true;
      controller = null;
    }
  });
})();
