# Compiler launcher for the CUDA sources (CMAKE_CUDA_COMPILER_LAUNCHER, see ../CMakeLists.txt):
#   cmake -P ptxas_guard.cmake -- <nvcc command...>
# Runs the nvcc command, prints its output in one piece, keeps ptxas's resource report next to the object
# (<object>.ptxas.txt: one file per compile, so a parallel build cannot interleave two reports), and fails the
# compile when a kernel reports a stack frame or spill bytes, or when the report is missing (-Xptxas -v dropped).
# A second check beside ptxas's own -warn-spills,-warn-lmem-usage,-Werror: it does not depend on how ptxas
# classifies a warning.
set(cmd "")
set(obj "")
set(in_cmd FALSE)
set(prev "")
math(EXPR last "${CMAKE_ARGC} - 1")
foreach(i RANGE 0 ${last})
  set(arg "${CMAKE_ARGV${i}}")
  if(in_cmd)
    list(APPEND cmd "${arg}")
    if(prev STREQUAL "-o")
      set(obj "${arg}")
    endif()
    set(prev "${arg}")
  elseif(arg STREQUAL "--")
    set(in_cmd TRUE)
  endif()
endforeach()
if(NOT cmd)
  message(FATAL_ERROR "ptxas_guard.cmake: no command after --")
endif()

execute_process(COMMAND ${cmd} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
set(log "${out}${err}")
if(log)
  message("${log}")
endif()
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "nvcc failed (${rc})")
endif()
if(NOT obj)  # not a compile to an object (e.g. a dependency scan): nothing to check
  return()
endif()
file(WRITE "${obj}.ptxas.txt" "${log}")

string(REGEX MATCHALL "Compiling entry function '[^']+' for 'sm_[0-9]+'" entries "${log}")
string(REGEX MATCHALL "[0-9]+ bytes stack frame, [0-9]+ bytes spill stores, [0-9]+ bytes spill loads" reports "${log}")
list(LENGTH entries n_entries)
list(LENGTH reports n_reports)
if(n_entries EQUAL 0 OR NOT n_entries EQUAL n_reports)
  message(FATAL_ERROR "${obj}: ${n_entries} kernels but ${n_reports} ptxas resource reports (is -Xptxas -v set?)")
endif()
foreach(r IN LISTS reports)
  if(NOT r STREQUAL "0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads")
    file(REMOVE "${obj}")
    message(FATAL_ERROR "${obj}: local memory or register spills (${r}); see ${obj}.ptxas.txt")
  endif()
endforeach()
