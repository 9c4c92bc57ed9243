# One helper for every library and test target, so flags, include roots and ctest labels
# are set in one place.
#
#   sy_library(NAME SRCS a.cc b.cc DEPS other_lib ...)
#   sy_test(NAME SRCS a_test.cc DEPS lib ... LABELS cpu|mpi|gpu [NP 2 4] [TIMEOUT s]
#           [NO_GTEST_MAIN])
#
# A test with NP runs once per listed rank count under mpiexec (--oversubscribe, and
# root is allowed, as in CI), named NAME_npN. Tests labelled gpu skip themselves (GTest
# skip, exit 0) when no device is visible. NO_GTEST_MAIN: the test brings its own main()
# (multi-rank tests that must call MPI_Init/MPI_Finalize around RUN_ALL_TESTS).

function(sy_library name)
  cmake_parse_arguments(A "" "" "SRCS;DEPS" ${ARGN})
  if(NOT A_SRCS)  # header-only for now
    add_library(${name} INTERFACE)
    target_include_directories(${name} INTERFACE ${PROJECT_SOURCE_DIR})
    target_link_libraries(${name} INTERFACE ${A_DEPS})
    return()
  endif()
  add_library(${name} STATIC ${A_SRCS})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(${name} PUBLIC ${A_DEPS})
endfunction()

# sy_registry_library(NAME SRCS ... DEPS ...): a library whose files register themselves from
# static initializers (routers, models, backends, communicators: SY_REGISTER_*). Nothing else
# references those files, so linked as a plain archive the linker would drop them and their
# registrations. NAME is an interface target that pulls NAME_archive in whole; consumers link
# NAME, never NAME_archive.
function(sy_registry_library name)
  cmake_parse_arguments(A "" "" "SRCS;DEPS" ${ARGN})
  sy_library(${name}_archive SRCS ${A_SRCS} DEPS ${A_DEPS})
  add_library(${name} INTERFACE)
  target_link_libraries(${name} INTERFACE "$<LINK_LIBRARY:WHOLE_ARCHIVE,${name}_archive>")
endfunction()

function(sy_test name)
  cmake_parse_arguments(A "NO_GTEST_MAIN" "TIMEOUT" "SRCS;DEPS;LABELS;NP" ${ARGN})
  if(NOT A_TIMEOUT)
    set(A_TIMEOUT 300)
  endif()
  add_executable(${name} ${A_SRCS})
  target_link_libraries(${name} PRIVATE ${A_DEPS} GTest::gtest)
  if(NOT A_NO_GTEST_MAIN)
    target_link_libraries(${name} PRIVATE GTest::gtest_main)
  endif()
  target_compile_definitions(${name} PRIVATE SY_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
                                             SY_DATA_DIR="${SY_DATA_DIR}")
  if(A_NP)
    foreach(np ${A_NP})
      add_test(NAME ${name}_np${np}
               COMMAND ${MPIEXEC_EXECUTABLE} --oversubscribe ${MPIEXEC_NUMPROC_FLAG} ${np}
                       $<TARGET_FILE:${name}>)
      set_tests_properties(${name}_np${np} PROPERTIES LABELS "${A_LABELS}" TIMEOUT ${A_TIMEOUT}
        ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_rmaps_base_oversubscribe=1")
    endforeach()
  else()
    add_test(NAME ${name} COMMAND ${name})
    set_tests_properties(${name} PROPERTIES LABELS "${A_LABELS}" TIMEOUT ${A_TIMEOUT})
  endif()
endfunction()
