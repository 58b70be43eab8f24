// Greedy answers from llama.cpp (npm node-llama-cpp's prebuilt binaries) for prompts already rendered with
// the model's chat template: what a GGUF export says in real llama.cpp, to compare with the service's own.
//   node scripts/llama_answer.mjs < {"model": "x.gguf", "prompts": ["<|im_start|>user..."], "max_tokens": 40}
// prints a JSON list of answers. NODE_LLAMA_CPP_DIR: the folder whose node_modules holds node-llama-cpp.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const home = process.env.NODE_LLAMA_CPP_DIR || ".venv/llama-node";
const { getLlama, LlamaCompletion } = await import(
  pathToFileURL(join(home, "node_modules", "node-llama-cpp", "dist", "index.js")).href);
const request = JSON.parse(readFileSync(0, "utf8"));
const llama = await getLlama({ gpu: false, build: "never", logLevel: "error" });
const model = await llama.loadModel({ modelPath: request.model });
// One thread: on a busy 2-core machine more threads make llama.cpp crawl.
const context = await model.createContext({ contextSize: 1024, threads: 1 });
const answers = [];
for (const prompt of request.prompts) {
  const sequence = context.getSequence();
  const completion = new LlamaCompletion({ contextSequence: sequence });
  answers.push((await completion.generateCompletion(model.tokenize(prompt, true),
    { maxTokens: request.max_tokens ?? 40, temperature: 0 })).trim());
  sequence.dispose();
}
await context.dispose();
await model.dispose();
process.stdout.write(JSON.stringify(answers) + "\n");
