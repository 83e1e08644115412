from voxtrail.cli import main

main()
