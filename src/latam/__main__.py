from latam.cli import main

main()
