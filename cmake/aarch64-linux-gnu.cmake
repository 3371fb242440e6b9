# Cross toolchain: Linux aarch64 with the Debian/Ubuntu GNU cross compiler; tests run under
# qemu user-mode emulation with the cross sysroot as the ELF interpreter prefix.
#   apt-get install -y --no-install-recommends g++-aarch64-linux-gnu qemu-user
#   cmake -S . -B build/cmake-aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(QPART_AARCH64_TRIPLE aarch64-linux-gnu)
set(QPART_AARCH64_SYSROOT /usr/${QPART_AARCH64_TRIPLE})

set(CMAKE_C_COMPILER ${QPART_AARCH64_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${QPART_AARCH64_TRIPLE}-g++)

set(CMAKE_FIND_ROOT_PATH ${QPART_AARCH64_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64;-L;${QPART_AARCH64_SYSROOT})
