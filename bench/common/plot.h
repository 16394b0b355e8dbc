#pragma once
// Plots a benchmark's CSV with one of scripts/plot-*.py, run by Debian's
// /usr/bin/python3 (python3-matplotlib). Throws lacuna::Error when the
// script fails.
#include <string>

namespace lacuna::bench {

void plot(const std::string& script_name, const std::string& csv_path, const std::string& png_path);

}  // namespace lacuna::bench
