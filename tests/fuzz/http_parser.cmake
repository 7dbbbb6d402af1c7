# Data plane: the strict HTTP/1.1 parser and chunked framer (balancer/http_parser.h).
halb_fuzz(http_parser SOURCES fuzz_http_parser.cpp LIBS halb_http)
