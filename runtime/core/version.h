// The release version. Its one source is project(VERSION) in the top CMakeLists.txt, which
// passes it to every target as SY_VERSION.
#pragma once

#ifndef SY_VERSION
#error "SY_VERSION is set by the top CMakeLists.txt (add_compile_definitions)"
#endif

namespace sy {

inline constexpr char kVersion[] = SY_VERSION;

}  // namespace sy
