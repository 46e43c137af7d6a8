"""Writers: the FIB into route tables.

Owns: the one writer protocol and its result types (base.py), target -> writer (factory.py), the
Linux kernel table writer (netlink.py over the raw rtnetlink encoder rtnl.py); an AWS route-table
writer joins as one more module.

May not touch: anything above the writers -- controller.runtime, controller.agent, the sources
(controller.standalone, controller.operator) and controller.translate. Writers depend on
controller.desired only; every route they touch carries our own protocol (DESIGN §7.8).
"""
