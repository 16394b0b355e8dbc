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
  int32_t vocab_size() const;
  int32_t bos_id() const;  // -1 when the model has none
  int32_t eos_id() const;

 private:
  Tokenizer();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A tokenizer for synthetic models, trained on a small built-in English text:
// deterministic, with exactly `vocab_size` pieces (byte fallback on, so any
// UTF-8 text encodes). Returns the serialized model (what tokenizer.model holds).
std::vector<std::byte> train_synthetic_tokenizer(int32_t vocab_size);

}  // namespace lacuna
