#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "engine/model/tokenizer.h"
#include "sparse/error.h"

namespace lacuna {
namespace {

// Training at 512 takes well under a second, so most tests share that model;
// the 32000-piece one (about two seconds) is trained by one test only.
const std::vector<std::byte>& small_model() {
  static const std::vector<std::byte> model = train_synthetic_tokenizer(512);
  return model;
}

const Tokenizer& small_tokenizer() {
  static const Tokenizer tokenizer = Tokenizer::from_bytes(small_model());
  return tokenizer;
}

bool contains(const std::vector<int32_t>& ids, int32_t id) { return std::find(ids.begin(), ids.end(), id) != ids.end(); }

std::vector<int32_t> concat(std::vector<std::vector<int32_t>> parts) {
  std::vector<int32_t> all;
  for (const auto& p : parts) all.insert(all.end(), p.begin(), p.end());
  return all;
}

const std::vector<std::string> kSentences = {
    "The night train to the coast leaves a little before eleven.",
    "Stir the soup slowly, then add a pinch of salt.",
    "Rain is expected after midnight; take an umbrella!",
    "Zoë ordered crème brûlée at the café in Malmö.",
    "Поезд прибывает в 9:45, платформа 3.",
    "東京駅から新幹線に乗ります。",
    "Snow 🌨️ on the tracks 🚂, delays of 15–20 minutes.",
    "  leading spaces, double  spaces,\ttabs\nand a newline ",
    "",
};

void expect_round_trips(const Tokenizer& t) {
  for (const std::string& s : kSentences) {
    const std::vector<int32_t> ids = t.encode(s, false);
    // The synthetic models put <unk> at 0; byte fallback means it never appears.
    EXPECT_FALSE(contains(ids, 0)) << s;
    EXPECT_EQ(t.decode(ids), s);
    EXPECT_EQ(t.decode(t.encode(s, true)), s);
  }
}

TEST(Tokenizer, SmallSyntheticModel) {
  const Tokenizer& t = small_tokenizer();
  EXPECT_EQ(t.vocab_size(), 512);
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  expect_round_trips(t);
}

TEST(Tokenizer, LargeSyntheticModel) {
  const Tokenizer t = Tokenizer::from_bytes(train_synthetic_tokenizer(32000));
  EXPECT_EQ(t.vocab_size(), 32000);
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  expect_round_trips(t);
  const std::string s = "The baker carried three warm loaves across the bridge to the station before sunrise.";
  EXPECT_LT(t.encode(s, false).size(), small_tokenizer().encode(s, false).size());
}

TEST(Tokenizer, BosIsPrependedOnlyWhenAsked) {
  const Tokenizer& t = small_tokenizer();
  const std::vector<int32_t> plain = t.encode("the old train", false);
  const std::vector<int32_t> with_bos = t.encode("the old train", true);
  ASSERT_FALSE(plain.empty());
  EXPECT_FALSE(contains(plain, t.bos_id()));
  EXPECT_EQ(with_bos, concat({{t.bos_id()}, plain}));
  EXPECT_EQ(t.encode("", true), std::vector<int32_t>{t.bos_id()});
  EXPECT_TRUE(t.encode("", false).empty());
}

TEST(Tokenizer, OutOfVocabularyIdsDecodeAsPlaceholdersInPlace) {
  const Tokenizer& t = small_tokenizer();
  const std::vector<int32_t> a = t.encode("The old train", false);
  const std::vector<int32_t> b = t.encode("left at noon", false);
  const std::vector<int32_t> cafe = t.encode("café", false);
  EXPECT_EQ(t.decode(std::vector<int32_t>{512}), "<|512|>");
  EXPECT_EQ(t.decode(std::vector<int32_t>{-1, 70000, 513}), "<|-1|><|70000|><|513|>");
  // The word after a placeholder keeps its leading space, as it would after
  // any other piece.
  EXPECT_EQ(t.decode(concat({a, {512}, b})), "The old train<|512|> left at noon");
  EXPECT_EQ(t.decode(concat({a, {600, -5}, b, {31999}})), "The old train<|600|><|-5|> left at noon<|31999|>");
  EXPECT_EQ(t.decode(concat({{1000}, b})), "<|1000|> left at noon");
  // Special ids are in the vocabulary and decode to nothing.
  EXPECT_EQ(t.decode(concat({{t.bos_id()}, a, {999}, {t.eos_id()}})), "The old train<|999|>");
  // Byte pieces still combine into characters around a placeholder.
  EXPECT_EQ(t.decode(concat({cafe, {4096}, cafe})), "café<|4096|> café");
}

// Streaming gives, piece by piece, exactly the text decoded all at once,
// and never a piece ending inside a UTF-8 character.
TEST(TextStream, PiecesAddUpToTheWholeDecodeAndEndOnCharacterBoundaries) {
  const Tokenizer& t = small_tokenizer();
  const std::vector<int32_t> prompt = t.encode("The night train", true);
  for (const std::string& s : kSentences) {
    const std::vector<int32_t> generated = t.encode(" " + s, false);
    TextStream stream(t, prompt);
    std::string streamed;
    for (int32_t id : generated) {
      const std::string piece = stream.push(id);
      EXPECT_EQ(piece.find("\xEF\xBF\xBD"), std::string::npos) << s;
      streamed += piece;
    }
    streamed += stream.flush();
    const std::string prompt_text = t.decode(prompt);
    EXPECT_EQ(prompt_text + streamed, t.decode(concat({prompt, generated}))) << s;
  }
}

// Without context the first piece loses its leading space, as decode() does.
TEST(TextStream, WithoutContextMatchesDecode) {
  const Tokenizer& t = small_tokenizer();
  const std::vector<int32_t> ids = t.encode(kSentences[3], false);
  TextStream stream(t, {});
  std::string streamed;
  for (int32_t id : ids) streamed += stream.push(id);
  EXPECT_EQ(streamed + stream.flush(), t.decode(ids));
}

TEST(Tokenizer, TokenBytesAreWhatEachTokenStandsForAlone) {
  const Tokenizer& t = small_tokenizer();
  // Every token of a text, as bytes, joins back into the text (with the
  // space sentencepiece puts before the first word).
  for (const std::string& s : kSentences) {
    std::string joined;
    for (int32_t id : t.encode(s, false)) joined += t.token_bytes(id);
    EXPECT_EQ(joined, s.empty() ? "" : " " + s) << s;
  }
  // A character outside the training text falls back to one token per byte.
  const std::vector<int32_t> snow = t.encode("🌨", false);
  ASSERT_GE(snow.size(), 4u);
  EXPECT_EQ(t.token_bytes(snow.back()), std::string(1, '\xa8'));  // U+1F328 is F0 9F 8C A8
  EXPECT_EQ(t.token_bytes(t.bos_id()), "");  // a control token adds no text
  EXPECT_EQ(t.piece(t.bos_id()), "<s>");
  EXPECT_EQ(t.piece(snow.back()), "<0xA8>");
  EXPECT_EQ(t.token_bytes(512), "<|512|>");
  EXPECT_EQ(t.token_bytes(-3), "<|-3|>");
}

TEST(Tokenizer, MalformedModelsThrow) {
  const std::string garbage = "this is not a sentencepiece model";
  EXPECT_THROW(Tokenizer::from_bytes(std::as_bytes(std::span(garbage))), Error);
  EXPECT_THROW(Tokenizer::from_bytes({}), Error);
  const std::span<const std::byte> model(small_model());
  EXPECT_THROW(Tokenizer::from_bytes(model.first(model.size() / 2)), Error);
  try {
    Tokenizer::from_bytes(std::as_bytes(std::span(garbage)));
    FAIL() << "no error for a malformed model";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("malformed SentencePiece model"), std::string::npos) << e.what();
  }
}

// A piece starting with a NUL byte appended to a good model (a repeated
// protobuf field may come anywhere): libsentencepiece's double-array
// builder reads it as a key of zero length and throws its own exception,
// which must leave as lacuna::Error (found by fuzzing a .lacuna file's
// tokenizer).
TEST(Tokenizer, APieceStartingWithNulIsAMalformedModel) {
  std::vector<std::byte> model = small_model();
  // pieces { piece: "\0x" score: 0 type: NORMAL }
  for (const int b : {0x0A, 0x0B, 0x0A, 0x02, 0x00, 0x78, 0x15, 0x00, 0x00, 0x00, 0x00, 0x18, 0x01}) model.push_back(static_cast<std::byte>(b));
  try {
    Tokenizer::from_bytes(model);
    FAIL() << "no error for the piece";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("malformed SentencePiece model"), std::string::npos) << e.what();
  }
}

TEST(Tokenizer, FromFileLoadsAndNamesTheMissingPath) {
  const std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("lacuna-test-tokenizer-" + std::to_string(getpid()) + ".model");
  {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(small_model().data()), static_cast<std::streamsize>(small_model().size()));
  }
  EXPECT_EQ(Tokenizer::from_file(path.string()).vocab_size(), 512);
  std::filesystem::remove(path);
  try {
    Tokenizer::from_file(path.string());
    FAIL() << "no error for a missing file";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
  }
}

TEST(Tokenizer, MovedTokenizerStillWorks) {
  Tokenizer t = Tokenizer::from_bytes(small_model());
  Tokenizer moved = std::move(t);
  EXPECT_EQ(moved.decode(moved.encode("warm bread", false)), "warm bread");
  t = std::move(moved);
  EXPECT_EQ(t.vocab_size(), 512);
}

TEST(Tokenizer, TrainingIsDeterministic) {
  EXPECT_EQ(train_synthetic_tokenizer(512), small_model());
  EXPECT_EQ(train_synthetic_tokenizer(2048), train_synthetic_tokenizer(2048));
}

TEST(Tokenizer, RejectsImpossibleVocabularySizes) {
  EXPECT_THROW(train_synthetic_tokenizer(0), Error);
  EXPECT_THROW(train_synthetic_tokenizer(100), Error);  // fewer than the byte and character pieces
  EXPECT_THROW(train_synthetic_tokenizer(1'000'000), Error);
}

}  // namespace
}  // namespace lacuna
