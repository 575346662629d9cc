# Builds libdocqa_resources: schema/**.sql and configs/** embedded with glib-compile-resources.
# The resource paths are /docqa/<path relative to the source root>, e.g.
# /docqa/schema/sqlite/0001_documents_pages.sql.
find_program(GLIB_COMPILE_RESOURCES glib-compile-resources REQUIRED)
file(GLOB_RECURSE DOCQA_RESOURCE_FILES CONFIGURE_DEPENDS
     RELATIVE ${CMAKE_SOURCE_DIR}
     ${CMAKE_SOURCE_DIR}/schema/*.sql ${CMAKE_SOURCE_DIR}/configs/*.txt
     ${CMAKE_SOURCE_DIR}/configs/*.json)
list(SORT DOCQA_RESOURCE_FILES)
set(_xml "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<gresources>\n  <gresource prefix=\"/docqa\">\n")
foreach(f ${DOCQA_RESOURCE_FILES})
  string(APPEND _xml "    <file>${f}</file>\n")
endforeach()
string(APPEND _xml "  </gresource>\n</gresources>\n")
file(GENERATE OUTPUT ${CMAKE_BINARY_DIR}/docqa.gresource.xml CONTENT "${_xml}")
set(_deps)
foreach(f ${DOCQA_RESOURCE_FILES})
  list(APPEND _deps ${CMAKE_SOURCE_DIR}/${f})
endforeach()
add_custom_command(
  OUTPUT ${CMAKE_BINARY_DIR}/docqa_resources.c
  COMMAND ${GLIB_COMPILE_RESOURCES} --generate-source --c-name docqa
          --sourcedir=${CMAKE_SOURCE_DIR} --target=${CMAKE_BINARY_DIR}/docqa_resources.c
          ${CMAKE_BINARY_DIR}/docqa.gresource.xml
  DEPENDS ${CMAKE_BINARY_DIR}/docqa.gresource.xml ${_deps}
  COMMENT "Embedding schema and configs")
add_library(docqa_resources STATIC ${CMAKE_BINARY_DIR}/docqa_resources.c)
# Generated code: not ours to warn about.
set_source_files_properties(${CMAKE_BINARY_DIR}/docqa_resources.c PROPERTIES COMPILE_OPTIONS "-w")
target_link_libraries(docqa_resources PUBLIC PkgConfig::GLIB)
