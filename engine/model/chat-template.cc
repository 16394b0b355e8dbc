#include "engine/model/chat-template.h"

#include <string>

#include "sparse/error.h"

namespace lacuna {

std::vector<int32_t> apply_chat_template(const Model& model, std::span<const ChatMessage> messages) {
  if (messages.empty()) throw Error("a chat needs at least one message");
  const Tokenizer* tok = model.tokenizer();
  if (!tok) throw Error("the model has no tokenizer: a chat needs one (give token ids instead)");
  const ModelConfig& c = model.config();
  std::vector<int32_t> ids;
  if (c.bos_id >= 0) ids.push_back(c.bos_id);
  auto append = [&](const std::string& text) {
    const std::vector<int32_t> t = tok->encode(text, false);
    ids.insert(ids.end(), t.begin(), t.end());
  };
  std::string system;
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string role(messages[i].role), text(messages[i].content);
    if (role == "system") {
      system += text + "\n\n";
    } else if (role == "user") {
      // Mixtral's template has no system role: a system message goes before the next user message.
      if (c.arch == Arch::mixtral) append("[INST] " + system + text + " [/INST]");
      else append(system + "Human: " + text + "\n\n");
      system.clear();
    } else if (role == "assistant") {
      if (c.arch == Arch::mixtral) {
        append(text);
        if (c.eos_id >= 0) ids.push_back(c.eos_id);
      } else {
        append("Assistant: " + text + "\n\n");
      }
    } else {
      throw Error("messages[" + std::to_string(i) + "].role is \"" + role + "\", not system, user or assistant");
    }
  }
  if (c.arch != Arch::mixtral) append("Assistant:");
  return ids;
}

}  // namespace lacuna
