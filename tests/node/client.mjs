// tests/node/client.mjs BASE_URL TEXT1 TEXT2 CHAT_TEXT: the official openai package against
// ./run --serve. Prints one JSON object: the moderation response for [TEXT1, TEXT2] and the chat
// completion's reply and decision-token logprob for CHAT_TEXT, as the client parsed them.
import OpenAI from "openai";

const [baseURL, t1, t2, chatText] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0, timeout: 60000 });

const moderation = await client.moderations.create({ model: "llama-guard", input: [t1, t2] });
const chat = await client.chat.completions.create({
  model: "llama-guard",
  messages: [{ role: "user", content: chatText }],
  logprobs: true,
  top_logprobs: 2,
});
const choice = chat.choices[0];
console.log(JSON.stringify({
  moderation,
  chat: { content: choice.message.content, logprob: choice.logprobs.content[0].logprob, usage: chat.usage },
}));
