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

// A file that cannot be opened, mapped or locked in memory, as opposed to one
// whose content is wrong (the C API's LACUNA_STATUS_IO).
class IoError : public Error {
 public:
  using Error::Error;
};

}  // namespace lacuna
