#pragma once
// A chat as the model's architecture formats it: the prompt of the
// assistant's next answer. One template per architecture (docs/server.md
// gives them); shared by the server's chat API and the C API.
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "engine/model/model.h"

namespace lacuna {

struct ChatMessage {
  std::string_view role;  // "system", "user" or "assistant"
  std::string_view content;
};

// The tokens of `messages` through the template, ending where the
// assistant's answer begins. Throws lacuna::Error naming the problem: no
// messages, a role other than the three (by its index: "messages[2].role
// ..."), a model without a tokenizer.
std::vector<int32_t> apply_chat_template(const Model& model, std::span<const ChatMessage> messages);

}  // namespace lacuna
