#pragma once
// SentencePiece tokenizer (Debian's libsentencepiece), loaded from the
// serialized model stored inside a .lacuna file. Owned by the tokenizer helper.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lacuna {

class Tokenizer {
 public:
  // Throws lacuna::Error on a malformed model.
  static Tokenizer from_bytes(std::span<const std::byte> serialized_model);
  static Tokenizer from_file(const std::string& path);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  std::vector<int32_t> encode(std::string_view text, bool add_bos) const;
  // Ids outside the tokenizer's vocabulary decode as "<|id|>" (a model's
  // vocabulary may be larger than its tokenizer's).
  std::string decode(std::span<const int32_t> ids) const;
  // What one token stands for on its own, as bytes: its piece with the
  // word-boundary mark as a space, a byte-fallback piece as its one byte
  // (so possibly not valid UTF-8 alone), a control piece (<s>, </s>) as
  // nothing; ids outside the vocabulary as decode() shows them. For
  // per-token views (log-probabilities), not for joining into text.
  std::string token_bytes(int32_t id) const;
  // The piece as the vocabulary spells it ("<s>", "\u2581the", "<0xE2>");
  // ids outside it as decode() shows them.
  std::string piece(int32_t id) const;
  int32_t vocab_size() const;
  int32_t bos_id() const;  // -1 when the model has none
  int32_t eos_id() const;

 private:
  Tokenizer();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The text a growing token sequence adds, token by token, for streaming.
// Each push decodes only a short window (the run emitted last plus the new
// tokens), so a long generation costs linear time, and returns nothing while
// the window ends inside a UTF-8 character (byte-fallback pieces).
class TextStream {
 public:
  // `context`: the tokens before the first pushed one (the prompt). Their text
  // is not returned; they decide whether the first piece starts with a space.
  TextStream(const Tokenizer& tokenizer, std::span<const int32_t> context);
  std::string push(int32_t token);
  // What is still held back (an incomplete character at the end).
  std::string flush();

 private:
  std::string pending_text(bool allow_incomplete);
  const Tokenizer* tokenizer_;
  std::vector<int32_t> window_;
  size_t emitted_from_ = 0, emitted_to_ = 0;  // window_[from, to) is the run emitted last
};

// A tokenizer for synthetic models, trained on a small built-in English text:
// deterministic, with exactly `vocab_size` pieces (byte fallback on, so any
// UTF-8 text encodes). Returns the serialized model (what tokenizer.model holds).
std::vector<std::byte> train_synthetic_tokenizer(int32_t vocab_size);

}  // namespace lacuna
