#include "engine/cli/table.h"

#include <algorithm>
#include <cctype>

namespace lacuna::cli {
namespace {

bool is_numeric(const std::string& s) {
  const size_t first = s.find_first_not_of("-.");
  return first != std::string::npos && first <= 1 && std::isdigit(static_cast<unsigned char>(s[first]));
}

}  // namespace

void Table::print(std::FILE* out) const {
  std::vector<size_t> width;
  for (const auto& row : rows_) {
    width.resize(std::max(width.size(), row.size()));
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  for (size_t r = 0; r < rows_.size(); ++r) {
    std::string line;
    for (size_t i = 0; i < rows_[r].size(); ++i) {
      const std::string& cell = rows_[r][i];
      const std::string pad(width[i] - cell.size(), ' ');
      line += (i ? "  " : "") + (r > 0 && is_numeric(cell) ? pad + cell : cell + pad);
    }
    line.erase(line.find_last_not_of(' ') + 1);
    std::fprintf(out, "%s\n", line.c_str());
  }
}

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024.0 && u < 4) bytes /= 1024.0, ++u;
  return fixed(bytes, u ? 1 : 0) + " " + units[u];
}

}  // namespace lacuna::cli
