#pragma once
// A plain-text table with right-aligned numeric columns, for CLI reports.
#include <cstdio>
#include <string>
#include <vector>

namespace lacuna::cli {

class Table {
 public:
  explicit Table(std::vector<std::string> header) : rows_{std::move(header)} {}
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void print(std::FILE* out = stdout) const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

std::string fixed(double v, int decimals);
std::string human_bytes(double bytes);

}  // namespace lacuna::cli
