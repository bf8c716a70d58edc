// One exception type inside the library; the C API turns it into a status code and ek_last_error().
#pragma once

#include <stdexcept>
#include <string>

#include "edgekit_host.h"

namespace ek {

class Error : public std::runtime_error {
public:
    Error(ek_status status, const std::string & message) : std::runtime_error(message), status(status) {}
    ek_status status;
};

}  // namespace ek
