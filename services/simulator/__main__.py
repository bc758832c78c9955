from services.simulator.cli import main

main()
