[SmartPop_web]
title="SmartPop"
desc="SmartPop web backend (listens on 127.0.0.1 only; opened through DSM)"
port_forward="no"
dst.ports="8765/tcp"
