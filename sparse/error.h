#pragma once
// The one exception type Lacuna throws internally. The C API (include/lacuna.h)
// turns it into a status code and a message; it never crosses that boundary.
#include <stdexcept>
#include <string>

namespace lacuna {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace lacuna
