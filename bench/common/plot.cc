#include "bench/common/plot.h"

#include <cstdio>
#include <cstdlib>

#include "sparse/error.h"

namespace lacuna::bench {
namespace {

std::string shell_quoted(const std::string& s) {
  std::string q = "'";
  for (char ch : s) q += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return q + "'";
}

}  // namespace

void plot(const std::string& script_name, const std::string& csv_path, const std::string& png_path) {
  std::string cmd = "/usr/bin/python3 ";
  cmd.append(shell_quoted(std::string(LACUNA_SOURCE_DIR) + "/scripts/" + script_name))
      .append(" ")
      .append(shell_quoted(csv_path))
      .append(" ")
      .append(shell_quoted(png_path));
  if (std::system(cmd.c_str()) != 0) throw Error("plotting failed: " + cmd);
  std::printf("wrote %s\n", png_path.c_str());
}

}  // namespace lacuna::bench
