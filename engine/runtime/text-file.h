#pragma once
// A whole text file as a string, for the commands and benchmarks that take
// one (perplexity, calibration, --numa-calib). Throws lacuna::Error "PATH:
// cannot read WHAT".
#include <fstream>
#include <sstream>
#include <string>

#include "sparse/error.h"

namespace lacuna {

inline std::string read_text_file(const std::string& path, const std::string& what) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot read " + what);
  std::ostringstream text;
  text << f.rdbuf();
  return text.str();
}

}  // namespace lacuna
