// The tokenizer wraps sentencepiece's processor; train_synthetic_tokenizer
// trains a unigram model in memory on a generated English corpus.
#include "engine/model/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <type_traits>
#include <unordered_map>
#include <utility>

#include "sparse/error.h"

namespace lacuna {

// Ids cross the sentencepiece API as std::vector<int>; they are int32 here.
static_assert(std::is_same_v<int, int32_t>);

struct Tokenizer::Impl {
  sentencepiece::SentencePieceProcessor sp;
};

namespace {

void check(const sentencepiece::util::Status& status, std::string_view what) {
  if (!status.ok()) throw Error("tokenizer: " + std::string(what) + ": " + status.ToString());
}

// libsentencepiece reports most damage in a Status, but its double-array
// builder (darts-clone) throws its own exception for some (a piece starting
// with NUL, a key of zero length to it: found by fuzzing), which must leave
// as lacuna::Error too.
void load(sentencepiece::SentencePieceProcessor& sp, std::string_view bytes, const std::string& what) {
  try {
    check(sp.LoadFromSerializedProto(bytes), what);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error("tokenizer: " + what + ": " + e.what());
  }
}

}  // namespace

Tokenizer::Tokenizer() : impl_(std::make_unique<Impl>()) {}
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

Tokenizer Tokenizer::from_bytes(std::span<const std::byte> serialized_model) {
  Tokenizer tokenizer;
  const std::string_view bytes(reinterpret_cast<const char*>(serialized_model.data()), serialized_model.size());
  load(tokenizer.impl_->sp, bytes, "malformed SentencePiece model");
  return tokenizer;
}

Tokenizer Tokenizer::from_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("tokenizer: cannot open " + path);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw Error("tokenizer: cannot read " + path);
  Tokenizer tokenizer;
  load(tokenizer.impl_->sp, bytes, "malformed SentencePiece model in " + path);
  return tokenizer;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos) const {
  std::vector<int32_t> ids;
  check(impl_->sp.Encode(text, &ids), "cannot encode");
  if (add_bos && bos_id() >= 0) ids.insert(ids.begin(), bos_id());
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  const int32_t n = vocab_size();
  const auto in_vocab = [n](int32_t id) { return id >= 0 && id < n; };
  std::string text;
  if (std::all_of(ids.begin(), ids.end(), in_vocab)) {
    check(impl_->sp.Decode(std::vector<int32_t>(ids.begin(), ids.end()), &text), "cannot decode");
    return text;
  }
  // Decoding the runs between placeholders separately would drop the space
  // that starts each run (sentencepiece strips it at the start of a text).
  // Instead decode the whole sequence with <unk> standing in for the foreign
  // ids, which keeps every piece's surface as in a placeholder-free decode,
  // and splice the placeholders over the <unk> surfaces.
  const int32_t unk = impl_->sp.unk_id();
  std::vector<int32_t> substituted(ids.begin(), ids.end());
  std::replace_if(substituted.begin(), substituted.end(), [&](int32_t id) { return !in_vocab(id); }, unk);
  sentencepiece::ImmutableSentencePieceText decoded;
  check(impl_->sp.Decode(substituted, decoded.mutable_proto()), "cannot decode");
  const auto pieces = decoded.pieces();
  if (pieces.size() != ids.size())
    throw Error("tokenizer: sentencepiece decoded " + std::to_string(ids.size()) + " ids into " +
                std::to_string(pieces.size()) + " pieces");
  for (size_t i = 0; i < ids.size(); ++i)
    text += in_vocab(ids[i]) ? pieces[i].surface() : "<|" + std::to_string(ids[i]) + "|>";
  return text;
}

std::string Tokenizer::piece(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return "<|" + std::to_string(id) + "|>";
  return impl_->sp.IdToPiece(id);
}

std::string Tokenizer::token_bytes(int32_t id) const {
  const std::string piece = this->piece(id);
  if (id < 0 || id >= vocab_size() || impl_->sp.IsUnknown(id)) return piece;
  if (impl_->sp.IsControl(id)) return "";
  if (impl_->sp.IsByte(id)) return std::string(1, static_cast<char>(std::stoi(piece.substr(3, 2), nullptr, 16)));  // "<0xNN>"
  constexpr std::string_view kWordBoundary = "\xE2\x96\x81";  // U+2581
  std::string out;
  for (size_t i = 0; i < piece.size();) {
    if (piece.compare(i, kWordBoundary.size(), kWordBoundary) == 0) {
      out += ' ';
      i += kWordBoundary.size();
    } else {
      out += piece[i++];
    }
  }
  return out;
}

namespace {

// Prompt tokens a stream keeps as context: enough for the first piece's space.
constexpr size_t kStreamContext = 4;
// SentencePiece decodes a byte sequence cut inside a character as U+FFFD.
constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";

}  // namespace

TextStream::TextStream(const Tokenizer& tokenizer, std::span<const int32_t> context)
    : tokenizer_(&tokenizer),
      window_(context.end() - static_cast<ptrdiff_t>(std::min(context.size(), kStreamContext)), context.end()),
      emitted_to_(window_.size()) {}

std::string TextStream::pending_text(bool allow_incomplete) {
  const std::span<const int32_t> all(window_);
  const std::string before = tokenizer_->decode(all.subspan(emitted_from_, emitted_to_ - emitted_from_));
  const std::string after = tokenizer_->decode(all.subspan(emitted_from_));
  if (after.size() <= before.size() || (!allow_incomplete && after.ends_with(kReplacementCharacter))) return {};
  // The new run's first token keeps its leading space: it is not the first of the decoded text.
  window_.erase(window_.begin(), window_.begin() + static_cast<ptrdiff_t>(emitted_to_));
  emitted_from_ = 0;
  emitted_to_ = window_.size();
  return after.substr(before.size());
}

std::string TextStream::push(int32_t token) {
  window_.push_back(token);
  return pending_text(false);
}

std::string TextStream::flush() { return pending_text(true); }

int32_t Tokenizer::vocab_size() const { return impl_->sp.GetPieceSize(); }
int32_t Tokenizer::bos_id() const { return impl_->sp.bos_id(); }
int32_t Tokenizer::eos_id() const { return impl_->sp.eos_id(); }

namespace {

// The synthetic training text. A few KB of prose alone supports only a few
// thousand pieces (sentencepiece's unigram trainer seeds its vocabulary with
// substrings shared by at least two distinct words), so the corpus is padded,
// in proportion to the requested size, with invented English place names,
// each written once bare and once with a comma: the two distinct words make
// every name a seed, and most names survive as whole-word pieces.

constexpr std::string_view kProse[] = {
    "The morning began grey and still, with a thin mist lying over the fields. By nine o'clock a light wind had "
    "come up from the west, and the clouds started to break apart. Farmers looked at the sky and hoped the rain "
    "would hold off until the hay was in. It did not. Just after noon the first heavy drops fell, and within a "
    "few minutes the lane had turned into a shallow brown stream.",
    "Winter arrives slowly in the valley. First the nights grow cold and the puddles freeze at the edges, then "
    "one morning the hills are white and the river runs dark between banks of snow. Children drag sledges up "
    "the slope behind the church, and the baker opens an hour early because everyone wants warm bread before "
    "the long walk to work.",
    "To make a simple vegetable soup, chop two onions, three carrots and a stick of celery. Soften them in a "
    "little butter over a low heat, stirring now and then, for about ten minutes. Add a handful of lentils, a "
    "bay leaf and enough water to cover everything twice over. Let it simmer until the lentils are soft, then "
    "season with salt, pepper and a squeeze of lemon.",
    "Good bread needs patience more than skill. Mix flour, water, salt and a spoonful of yeast, knead the dough "
    "until it feels smooth and springy, and leave it covered in a warm corner of the kitchen. When it has "
    "doubled in size, shape it into a round loaf, let it rise once more, and bake it in a hot oven until the "
    "crust sounds hollow when you tap it.",
    "The night train to the coast leaves the city a little before eleven. Most passengers settle into their "
    "seats with a book or a blanket, but a few stand by the windows and watch the lights of the suburbs thin "
    "out into darkness. Somewhere past midnight the train slows for a long bridge, and the sound of the wheels "
    "changes from a steady rattle to a hollow drum.",
    "Old railway stations have their own rhythm. A bell rings, a voice reads out the platforms, doors slam and "
    "whistles blow. The guard checks his watch, raises a green flag, and the carriages begin to move. On the "
    "far platform a porter pushes a trolley of parcels, and a pigeon walks carefully along the edge as if it "
    "too were waiting for a train.",
    "In spring the garden fills with small surprises. Tulips push up between the stones, the apple tree covers "
    "itself in pale blossom, and blackbirds argue over the best places to build. We plant beans along the "
    "fence, lettuce in the shade of the wall, and a row of sunflowers that will be taller than the shed by the "
    "end of summer.",
    "The harbour is busiest at dawn, when the fishing boats come back and the gulls circle above them, "
    "shouting. Crates of fish are lifted onto the quay and carried to the market hall, where buyers from the "
    "restaurants walk slowly between the tables. By the time the town is properly awake, the boats are tied up "
    "and the crews are drinking tea in the café by the lighthouse.",
    "My grandmother kept a notebook of weather sayings. A red sky at night meant a fine morning, swallows "
    "flying low meant rain, and a ring around the moon meant a storm within three days. She was right more "
    "often than the radio forecast, or so she claimed, and she never went out without checking the clouds over "
    "the western hills.",
    "Cooking for a crowd is mostly a matter of planning. Decide on the dishes a day ahead, buy everything the "
    "evening before, and do the chopping while the kettle boils in the morning. A large pot of stew, a tray of "
    "roasted potatoes, a green salad and a fruit pie will feed twelve hungry people, and most of it can be "
    "made before the first guest knocks on the door.",
};

constexpr std::string_view kAdjectives[] = {
    "old",     "small",   "quiet",    "bright",   "cold",     "warm",    "heavy",  "narrow", "wooden",   "silver",
    "copper",  "green",   "yellow",   "grey",     "distant",  "sleepy",  "busy",   "empty",  "crowded",  "gentle",
    "rough",   "smooth",  "sharp",    "round",    "tall",     "early",   "late",   "wet",    "dry",      "frozen",
    "golden",  "dusty",   "noisy",    "slow",     "fast",     "careful", "patient", "hungry", "tired",   "cheerful",
    "lonely",  "northern", "southern", "hidden",  "broken",   "clean",   "fresh",  "sweet",  "bitter",   "crisp",
    "soft",    "steep",   "shallow",  "deep",     "pale",     "dark"};
constexpr std::string_view kNouns[] = {
    "train",   "station", "platform", "carriage", "engine",  "signal",  "ticket", "bridge",   "tunnel",    "river",
    "valley",  "harbour", "village",  "market",   "bakery",  "kitchen", "oven",   "kettle",   "pot",       "spoon",
    "loaf",    "soup",    "onion",    "carrot",   "apple",   "pear",    "lemon",  "cloud",    "storm",     "rain",
    "snow",    "wind",    "fog",      "frost",    "garden",  "meadow",  "forest", "hill",     "mountain",  "lake",
    "road",    "lantern", "window",   "door",     "roof",    "chimney", "clock",  "letter",   "basket",    "blanket",
    "umbrella", "map",    "farmer",   "baker",    "driver",  "guard",   "teacher", "sailor",  "gardener",  "neighbour",
    "traveller", "child", "dog",      "cat",      "horse",   "sparrow", "heron",  "fox"};
constexpr std::string_view kVerbs[] = {
    "carried",  "watched",     "followed",   "painted",     "cooked",    "crossed",   "remembered", "cleaned",
    "lifted",   "counted",     "passed",     "visited",     "opened",    "found",     "warmed",     "described",
    "stirred",  "baked",       "chopped",    "boiled",      "tasted",    "poured",    "sliced",     "roasted",
    "waited for", "listened to", "looked at", "walked past", "climbed",  "repaired",  "polished",   "greeted",
    "noticed",  "measured",    "collected",  "delivered",   "packed",    "folded",    "borrowed",   "signalled to"};
constexpr std::string_view kPrepositions[] = {"near",    "beside", "behind", "under",    "above",  "across",
                                              "along",   "inside", "beyond", "towards",  "around", "past",
                                              "through", "over",   "below",  "opposite"};
constexpr std::string_view kTimes[] = {
    "before sunrise",       "after the storm",    "during the long winter",  "on a rainy Tuesday",
    "at half past six",     "in early spring",    "while the snow fell",     "late in the evening",
    "before the market opened", "under a pale moon", "as the fog lifted",    "on the coldest day",
    "at noon",              "on Sunday morning",  "in the middle of August", "just after midnight",
    "when the bells rang",  "before the first frost", "after a slow breakfast", "as the rain stopped"};

constexpr std::string_view kNameStarts[] = {
    "Ash",    "Oak",    "Elm",    "Birch",  "Stone",  "Mill",   "Brook",  "Fern",   "Hazel",  "Holly",  "Marsh",
    "Moor",   "North",  "South",  "East",   "West",   "High",   "Low",    "Long",   "Broad",  "Green",  "Red",
    "White",  "Black",  "Cold",   "Wind",   "Rain",   "Frost",  "Sun",    "Star",   "Fox",    "Wolf",   "Hart",
    "Crow",   "Swan",   "Lark",   "Wren",   "Otter",  "Salt",   "Iron",   "Copper", "Silver", "Gold",   "Corn",
    "Barley", "Apple",  "Cherry", "Pear",   "Bell",   "Church", "King",   "Queen",  "Bishop", "Abbey",  "Castle",
    "Tower",  "Bridge", "Ferry",  "Harbour", "Sand",  "Clay",   "Chalk",  "Flint",  "Thorn"};
constexpr std::string_view kNameMiddles[] = {"",     "ley",  "wood",  "mere",  "field", "well", "hurst", "dale",
                                             "combe", "stead", "wick", "brook", "more",  "ridge", "ham",  "ford"};
constexpr std::string_view kNameEnds[] = {
    "ton",   "ford",   "bury",  "bridge", "ham",    "field",   "wood",   "stead",  "wick",  "combe", "mouth", "gate",
    "cross", "haven",  "holme", "thorpe", "by",     "worth",   "minster", "port",  "dale",  "mere",  "hurst", "ley",
    "well",  "brook",  "moor",  "heath",  "end",    "cliffe",  "don",    "low",    "chester", "cester", "borough",
    "sted",  "ing",    "ington", "hall",  "side",   "water",   "marsh",  "hythe",  "knoll", "shaw",  "barrow",
    "head",  "ness"};

constexpr size_t kNameCount = std::size(kNameStarts) * std::size(kNameMiddles) * std::size(kNameEnds);
constexpr size_t kTemplateSentences = 800;
// Measured: each name adds about 0.87 pieces of capacity to the roughly 3,000
// of the sentences, so 9/8 names per requested piece leave a margin, and all
// 49,152 names support about 47,700 pieces, which the cap stays well below.
constexpr size_t kNamesPerPieceNum = 9, kNamesPerPieceDen = 8;
constexpr int32_t kMaxSyntheticVocabSize = 40000;

// Two-part names (empty middle) come first, so small corpora get the most
// ordinary-looking ones.
std::string place_name(size_t i) {
  const size_t ends = std::size(kNameEnds), starts = std::size(kNameStarts);
  return std::string(kNameStarts[i / ends % starts]) + std::string(kNameMiddles[i / (ends * starts)]) +
         std::string(kNameEnds[i % ends]);
}

// xorshift64 taken modulo n, rather than <random>'s distributions, whose
// output is implementation-defined: the corpus must be the same everywhere.
class Rng {
 public:
  template <class T, size_t N>
  std::string pick(const T (&words)[N]) {
    state_ ^= state_ << 13;
    state_ ^= state_ >> 7;
    state_ ^= state_ << 17;
    return std::string(words[state_ % N]);
  }

 private:
  uint64_t state_ = 0x9E3779B97F4A7C15ull;
};

std::vector<std::string> synthetic_corpus(int32_t vocab_size) {
  std::vector<std::string> corpus(std::begin(kProse), std::end(kProse));
  Rng rng;
  for (size_t i = 0; i < kTemplateSentences; ++i) {
    std::string s = "the " + rng.pick(kAdjectives) + " " + rng.pick(kNouns) + " " + rng.pick(kVerbs) + " the " +
                    rng.pick(kAdjectives) + " " + rng.pick(kNouns) + " " + rng.pick(kPrepositions) + " the " +
                    rng.pick(kNouns) + " " + rng.pick(kTimes) + ".";
    s[0] = 'T';
    corpus.push_back(std::move(s));
  }
  const size_t wanted = static_cast<size_t>(vocab_size) * kNamesPerPieceNum / kNamesPerPieceDen;
  const size_t names = std::min(kNameCount, wanted) / 4 * 4;  // four to a sentence
  for (size_t i = 0; i < names; i += 4) {
    const std::string a = place_name(i), b = place_name(i + 1), c = place_name(i + 2), d = place_name(i + 3);
    corpus.push_back("The train from " + a + " to " + b + " calls at " + c + " and " + d + " today.");
    corpus.push_back("Tickets for " + a + ", " + b + ", " + c + ", " + d + ", and more are sold here.");
  }
  return corpus;
}

class CorpusIterator : public sentencepiece::SentenceIterator {
 public:
  explicit CorpusIterator(const std::vector<std::string>& corpus) : corpus_(corpus) {}
  bool done() const override { return next_ >= corpus_.size(); }
  void Next() override { ++next_; }
  const std::string& value() const override { return corpus_[next_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& corpus_;
  size_t next_ = 0;
};

}  // namespace

std::vector<std::byte> train_synthetic_tokenizer(int32_t vocab_size) {
  if (vocab_size < 1 || vocab_size > kMaxSyntheticVocabSize)
    throw Error("tokenizer: a synthetic vocabulary size must be in [1, " + std::to_string(kMaxSyntheticVocabSize) +
                "], not " + std::to_string(vocab_size));
  const std::vector<std::string> corpus = synthetic_corpus(vocab_size);
  CorpusIterator sentences(corpus);
  const std::unordered_map<std::string, std::string> options = {
      {"model_type", "unigram"},
      {"vocab_size", std::to_string(vocab_size)},
      {"hard_vocab_limit", "true"},
      {"byte_fallback", "true"},
      // Every character of the corpus gets a piece; anything else falls back to bytes.
      {"character_coverage", "1.0"},
      // Decoding then reproduces any input exactly (nmt_nfkc would rewrite it).
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      // One thread keeps the result byte-identical from run to run; the
      // trainer draws no random numbers (it samples sentences only when
      // input_sentence_size is set).
      {"num_threads", "1"},
      // One EM pass per pruning round and halving the candidates each round
      // cut training time by about a quarter; the pieces serve synthetic models.
      {"num_sub_iterations", "1"},
      {"shrinking_factor", "0.5"},
      // Errors only, and those come back as a status. The level is global to
      // the process (sentencepiece has no per-call logging option).
      {"minloglevel", "2"},
  };
  std::string model;
  check(sentencepiece::SentencePieceTrainer::Train(options, &sentences, &model),
        "cannot train a " + std::to_string(vocab_size) + "-piece model");
  const auto* bytes = reinterpret_cast<const std::byte*>(model.data());
  return {bytes, bytes + model.size()};
}

}  // namespace lacuna
