from voxdock.cli import main

main()
