# State-sync wire codec and session (tests/fuzz/fuzz_statesync_codec.cpp; modes in its header).
halb_fuzz(statesync_codec SOURCES fuzz_statesync_codec.cpp LIBS halb_statesync_core)
