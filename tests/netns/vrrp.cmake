# VRRP scenarios: two halb nodes and a client on a bridge; halb paired with keepalived.
# Each script creates uniquely named namespaces and removes them on any exit.
add_executable(vrrp_probe ${CMAKE_CURRENT_LIST_DIR}/vrrp_probe.cpp)

add_test(NAME netns_vrrp_failover
  COMMAND ${CMAKE_CURRENT_LIST_DIR}/vrrp_failover.sh $<TARGET_FILE:halb> $<TARGET_FILE:vrrp_probe>)
add_test(NAME netns_vrrp_keepalived
  COMMAND ${CMAKE_CURRENT_LIST_DIR}/vrrp_keepalived.sh $<TARGET_FILE:halb> $<TARGET_FILE:vrrp_probe>)
set_tests_properties(netns_vrrp_failover netns_vrrp_keepalived PROPERTIES
  LABELS netns RUN_SERIAL TRUE TIMEOUT 300)
add_test(NAME netns_vrrp_modes
  COMMAND ${CMAKE_CURRENT_LIST_DIR}/vrrp_modes.sh $<TARGET_FILE:halb> $<TARGET_FILE:vrrp_probe>)
set_tests_properties(netns_vrrp_modes PROPERTIES LABELS netns RUN_SERIAL TRUE TIMEOUT 300)
