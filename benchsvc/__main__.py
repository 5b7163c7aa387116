from benchsvc.cli import main

main()
