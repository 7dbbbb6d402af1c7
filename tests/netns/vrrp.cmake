# VRRP scenarios (bash): two halb nodes and a client on a bridge, halb paired with keepalived,
# and the other modes (IPv6, unicast, tracking, notify, HMAC, 10 ms). Each script creates
# uniquely named namespaces, removes them on any exit, and exits 77 (skip) without root.
add_executable(vrrp_probe ${CMAKE_CURRENT_LIST_DIR}/vrrp_probe.cpp)

foreach(name vrrp_failover vrrp_keepalived vrrp_modes)
  add_test(NAME netns.${name}
    COMMAND ${CMAKE_CURRENT_LIST_DIR}/${name}.sh $<TARGET_FILE:halb> $<TARGET_FILE:vrrp_probe>)
  set_tests_properties(netns.${name} PROPERTIES
    LABELS "netns;vrrp" RUN_SERIAL TRUE TIMEOUT 300 SKIP_RETURN_CODE 77)
endforeach()
